// ServerMetrics as a scrape sees it: the Prometheus text of its registry.
#include "server/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "server/served_model_test_util.h"

namespace tcm {
namespace {

// The scrape's text.
std::string Scrape(const ServerMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

// The tcm_queue_depth lines of the scrape, as "LABELS VALUE", sorted.
std::vector<std::string> QueueDepthLines(const ServerMetrics& metrics) {
  std::vector<std::string> lines;
  std::istringstream in(Scrape(metrics));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("tcm_queue_depth{", 0) == 0) lines.push_back(line.substr(std::string("tcm_queue_depth").size()));
  std::sort(lines.begin(), lines.end());
  return lines;
}

ServedModel Version(const std::string& name, int slot, unsigned version, unsigned priority_levels) {
  ServedModel m = testing::TenClassModel(name, 4, 1);
  m.slot = slot;
  m.version = version;
  m.priority_levels = priority_levels;
  return m;
}

TEST(ServerMetricsTest, QueueDepthIsTheSumOverAModelsLiveVersions) {
  ServerMetrics metrics({Version("cond", 0, 1, 2)});
  metrics.model(0).SetQueueDepth(1, 3);
  metrics.model(0).SetQueueDepth(2, 5);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 3)", R"({model="cond",priority="2"} 5)"}));

  // A reload: version 2 (slot 1) queues work while version 1 drains. Neither
  // hides the other, whichever reports last.
  metrics.AddModel(Version("cond", 1, 2, 2));
  metrics.model(1).SetQueueDepth(2, 7);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 3)", R"({model="cond",priority="2"} 12)"}));
  metrics.model(0).SetQueueDepth(2, 0);  // the old version drained last: the new backlog still shows
  metrics.model(0).SetQueueDepth(1, 0);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 0)", R"({model="cond",priority="2"} 7)"}));

  // The old version is freed: only the new one counts, and a late report of
  // the freed version changes nothing.
  metrics.QueueFreed(0);
  metrics.model(0).SetQueueDepth(2, 40);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 0)", R"({model="cond",priority="2"} 7)"}));
}

TEST(ServerMetricsTest, AReloadWithFewerPriorityLevelsDropsTheSeriesOfTheLevelsGone) {
  ServerMetrics metrics({Version("cond", 0, 1, 3), Version("other", 1, 1, 1)});
  metrics.model(0).SetQueueDepth(3, 2);
  metrics.AddModel(Version("cond", 2, 2, 2));  // priority_levels 3 -> 2
  metrics.model(2).SetQueueDepth(1, 4);
  // While version 1 drains, its third level is still reported.
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 4)", R"({model="cond",priority="2"} 0)",
                                      R"({model="cond",priority="3"} 2)", R"({model="other",priority="1"} 0)"}));
  metrics.model(0).SetQueueDepth(3, 0);
  metrics.QueueFreed(0);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 4)", R"({model="cond",priority="2"} 0)",
                                      R"({model="other",priority="1"} 0)"}));
  // A reload that raises them again brings the series back, at 0.
  metrics.AddModel(Version("cond", 3, 3, 3));
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 4)", R"({model="cond",priority="2"} 0)",
                                      R"({model="cond",priority="3"} 0)", R"({model="other",priority="1"} 0)"}));
}

TEST(ServerMetricsTest, AnUnloadedModelLeavesNoQueueDepthSeriesAndItsCountersStay) {
  ServerMetrics metrics({Version("cond", 0, 1, 2), Version("other", 1, 1, 1)});
  metrics.model(1).ImagesAccepted(3);
  metrics.model(1).SetQueueDepth(1, 3);
  metrics.model(1).SetQueueDepth(1, 0);
  metrics.HideModelInfo(1);
  metrics.QueueFreed(1);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 0)", R"({model="cond",priority="2"} 0)"}));
  const std::string text = Scrape(metrics);
  EXPECT_NE(text.find(R"(tcm_images_accepted_total{model="other"} 3)"), std::string::npos) << text;
  // Loaded again, its series come back.
  metrics.AddModel(Version("other", 2, 2, 1));
  metrics.model(2).SetQueueDepth(1, 1);
  EXPECT_EQ(QueueDepthLines(metrics),
            (std::vector<std::string>{R"({model="cond",priority="1"} 0)", R"({model="cond",priority="2"} 0)",
                                      R"({model="other",priority="1"} 1)"}));
}

}  // namespace
}  // namespace tcm
