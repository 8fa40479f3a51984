#include "server/batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <tuple>

namespace tcm {
namespace {

// A task that records what happened to it.
struct Log {
  std::atomic<int> dropped{0};
  absl::Status last_drop;
  std::vector<int> unmeetable;          // ids dropped as unable to meet their deadline
  std::vector<absl::StatusCode> codes;  // of every drop, in order
  absl::Mutex mu;
};

class TestTask : public ImageTask {
 public:
  TestTask(int id, Log* log, std::shared_ptr<std::atomic<bool>> cancelled = nullptr,
           absl::Time deadline = absl::InfiniteFuture())
      : id(id), log_(log), cancelled_(std::move(cancelled)) {
    this->deadline = deadline;
  }
  absl::Status Abandoned(absl::Time now) const override {
    if (cancelled_ && *cancelled_) return absl::CancelledError("cancelled");
    if (now >= deadline) return absl::DeadlineExceededError("deadline");
    return absl::OkStatus();
  }
  void Drop(const absl::Status& why, DropCause cause) override {
    absl::MutexLock lock(&log_->mu);
    log_->last_drop = why;
    log_->codes.push_back(why.code());
    if (cause == DropCause::kDeadlineUnmeetable) log_->unmeetable.push_back(id);
    ++log_->dropped;
  }
  int id;

 private:
  Log* log_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

// One task of `steps` passes whose call ends at `deadline`.
std::vector<std::unique_ptr<ImageTask>> Due(int id, Log* log, absl::Time deadline, int steps = 1) {
  std::vector<std::unique_ptr<ImageTask>> out;
  out.push_back(std::make_unique<TestTask>(id, log, nullptr, deadline));
  out.back()->steps_left = steps;
  return out;
}

std::vector<std::unique_ptr<ImageTask>> Tasks(int first, int count, Log* log) {
  std::vector<std::unique_ptr<ImageTask>> out;
  for (int i = 0; i < count; ++i) out.push_back(std::make_unique<TestTask>(first + i, log));
  return out;
}

std::vector<int> Ids(const Batch& batch) {
  std::vector<int> ids;
  for (const auto& t : batch.tasks) ids.push_back(static_cast<TestTask&>(*t).id);
  return ids;
}

class BatcherTest : public ::testing::Test {
 protected:
  std::unique_ptr<Batcher> Make(size_t max_batch, absl::Duration delay, size_t max_queue = 100, int models = 1,
                                bool deadline_aware = true) {
    Batcher::Options options;
    options.clock = &clock_;
    for (int m = 0; m < models; ++m) {
      options.models.push_back({"model" + std::to_string(m), max_batch, delay, max_queue});
      options.models.back().deadline_aware = deadline_aware;
    }
    auto batcher = Batcher::Create(options);
    EXPECT_TRUE(batcher.ok()) << batcher.status();
    return std::move(*batcher);
  }
  FakeClock clock_;
  Log log_;
};

TEST_F(BatcherTest, FullBatchFormsAtOnce) {
  auto b = Make(4, absl::Milliseconds(10));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 4, &log_)).ok());
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(b->QueueDepth(0), 0u);
}

TEST_F(BatcherTest, AModelAddedWhileServingIsQueuedAndBatchedLikeTheFirst) {
  auto b = Make(2, absl::Milliseconds(5));
  int seen_under_lock = -1;
  auto added = b->AddModel({"added", 3, absl::Milliseconds(5), 10}, [&](int m) { seen_under_lock = m; });
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(*added, 1);
  EXPECT_EQ(seen_under_lock, 1);
  EXPECT_EQ(b->MaxBatchSize(1), 3u);
  EXPECT_EQ(b->MaxQueueSize(1), 10u);
  ASSERT_TRUE(b->Submit(1, Tasks(0, 3, &log_)).ok());
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 1);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{0, 1, 2}));
  // A worker whose model set predates the model does not serve it.
  ASSERT_TRUE(b->Submit(1, Tasks(3, 3, &log_)).ok());
  EXPECT_EQ(b->TryNextBatch(Batcher::ModelSet{true}), nullptr);
  EXPECT_NE(b->TryNextBatch(Batcher::ModelSet{true, true}), nullptr);
  // Options are checked as at creation.
  EXPECT_EQ(b->AddModel({"bad", 0, absl::Milliseconds(5), 10}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BatcherTest, ARetiredModelRefusesNewWorkFinishesItsOwnAndThenIsIdle) {
  auto b = Make(2, absl::Milliseconds(5));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 3, &log_)).ok());
  auto first = b->TryNextBatch();  // 0 and 1 in flight, 2 queued
  ASSERT_NE(first, nullptr);
  b->RetireModel(0);
  EXPECT_FALSE(b->ModelIdle(0));
  const absl::Status refused = b->Submit(0, Tasks(10, 1, &log_));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("model0"), std::string::npos) << refused;
  b->Resubmit(0, std::move(first->tasks[0]));  // a second step still runs
  b->BatchDone(0);
  EXPECT_FALSE(b->ModelIdle(0));
  clock_.Advance(absl::Milliseconds(5));
  auto second = b->TryNextBatch();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(Ids(*second), (std::vector<int>{0, 2}));
  EXPECT_FALSE(b->ModelIdle(0));  // in flight
  b->BatchDone(0);
  EXPECT_TRUE(b->ModelIdle(0));
}

TEST_F(BatcherTest, OnlyAnIdleModelIsReleasedAndItsIndexThenStaysRefused) {
  auto b = Make(2, absl::Milliseconds(5), 100, 2);
  EXPECT_EQ(b->ModelsHeld(), 2u);
  b->ReleaseModel(1);  // serving: kept
  ASSERT_TRUE(b->Submit(1, Tasks(0, 1, &log_)).ok());
  b->RetireModel(1);
  b->ReleaseModel(1);  // work queued: kept
  EXPECT_EQ(b->ModelsHeld(), 2u);
  clock_.Advance(absl::Milliseconds(5));
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 1);
  b->ReleaseModel(1);  // in flight: kept
  EXPECT_EQ(b->ModelsHeld(), 2u);
  b->BatchDone(1);
  b->ReleaseModel(1);
  EXPECT_EQ(b->ModelsHeld(), 1u);

  // A caller still holding the index is refused and reads zeros.
  EXPECT_TRUE(b->ModelIdle(1));
  const absl::Status refused = b->Submit(1, Tasks(1, 1, &log_));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("unloaded or replaced"), std::string::npos) << refused;
  EXPECT_EQ(b->QueueDepth(1), 0u);
  EXPECT_EQ(b->MaxBatchSize(1), 0u);
  EXPECT_EQ(b->MaxQueueSize(1), 0u);
  EXPECT_EQ(b->EstimatedPassTime(1, 2), absl::ZeroDuration());
  b->RetireModel(1);
  b->ReleaseModel(1);
  EXPECT_EQ(b->ModelsHeld(), 1u);

  // The next model takes a new index; the others go on batching, and the
  // batcher drains and finishes without the released queue.
  auto added = b->AddModel({"model2", 2, absl::Milliseconds(5), 10});
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(*added, 2);
  EXPECT_EQ(b->ModelsHeld(), 2u);
  ASSERT_TRUE(b->Submit(0, Tasks(10, 1, &log_)).ok());
  ASSERT_TRUE(b->Submit(2, Tasks(20, 2, &log_)).ok());
  b->Close();
  std::vector<int> models;
  while (auto next = b->NextBatch()) {
    models.push_back(next->model);
    b->BatchDone(next->model);
  }
  std::sort(models.begin(), models.end());
  EXPECT_EQ(models, (std::vector<int>{0, 2}));
  EXPECT_EQ(log_.dropped, 0);
}

TEST_F(BatcherTest, ANotRetiredModelIsNeverIdle) {
  auto b = Make(2, absl::Milliseconds(5));
  EXPECT_FALSE(b->ModelIdle(0));
}

TEST_F(BatcherTest, PartialBatchWaitsForTheQueueDelay) {
  auto b = Make(4, absl::Milliseconds(10));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 2, &log_)).ok());
  EXPECT_EQ(b->TryNextBatch(), nullptr);
  clock_.Advance(absl::Milliseconds(9));
  EXPECT_EQ(b->TryNextBatch(), nullptr);
  ASSERT_TRUE(b->Submit(0, Tasks(2, 1, &log_)).ok());
  clock_.Advance(absl::Milliseconds(1));  // the oldest has now waited 10 ms
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{0, 1, 2}));
}

TEST_F(BatcherTest, LargeRequestIsSplitAcrossBatches) {
  auto b = Make(2, absl::Milliseconds(5));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 5, &log_)).ok());
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0, 1}));
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{2, 3}));
  EXPECT_EQ(b->TryNextBatch(), nullptr);  // one left: waits for company
  clock_.Advance(absl::Milliseconds(5));
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{4}));
}

TEST_F(BatcherTest, ReturningTasksGoFirstAndShareTheBatchWithNewWork) {
  auto b = Make(3, absl::Milliseconds(50));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 3, &log_)).ok());
  auto first = b->TryNextBatch();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(b->Submit(0, Tasks(10, 2, &log_)).ok());
  // Two images of the first batch need a second step.
  b->Resubmit(0, std::move(first->tasks[0]));
  b->Resubmit(0, std::move(first->tasks[2]));
  b->BatchDone(0);
  auto second = b->TryNextBatch();  // ready without waiting: it holds returning work
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(Ids(*second), (std::vector<int>{0, 2, 10}));
  EXPECT_EQ(b->QueueDepth(0), 1u);
}

TEST_F(BatcherTest, WithoutStepMixingReturningAndNewTasksGetSeparateBatches) {
  Batcher::Options options;
  options.clock = &clock_;
  Batcher::ModelQueueOptions queue{"m", 3, absl::Milliseconds(50), 100};
  queue.mix_steps = false;
  options.models.push_back(queue);
  auto b = std::move(*Batcher::Create(options));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 3, &log_)).ok());
  auto first = b->TryNextBatch();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(b->Submit(0, Tasks(10, 2, &log_)).ok());
  b->Resubmit(0, std::move(first->tasks[0]));
  b->BatchDone(0);
  auto second = b->TryNextBatch();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(Ids(*second), (std::vector<int>{0}));  // the returning task alone
  clock_.Advance(absl::Milliseconds(50));
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{10, 11}));
}

TEST_F(BatcherTest, KindsMixByDefault) {
  auto b = Make(4, absl::ZeroDuration());
  for (int i = 0; i < 4; ++i) {
    auto tasks = Tasks(i, 1, &log_);
    tasks[0]->kind = 1 + i % 2;
    ASSERT_TRUE(b->Submit(0, std::move(tasks)).ok());
  }
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0, 1, 2, 3}));
}

TEST_F(BatcherTest, WithoutKindMixingEachBatchHoldsTheKindOfItsFirstTask) {
  Batcher::Options options;
  options.clock = &clock_;
  Batcher::ModelQueueOptions queue{"m", 3, absl::ZeroDuration(), 100};
  queue.mix_steps = false;
  queue.mix_kinds = false;
  options.models.push_back(queue);
  auto b = std::move(*Batcher::Create(options));
  // Requests of kinds 1, 2, 1, 2, 1 arrive one by one.
  for (int i = 0; i < 5; ++i) {
    auto tasks = Tasks(i, 1, &log_);
    tasks[0]->kind = 1 + i % 2;
    ASSERT_TRUE(b->Submit(0, std::move(tasks)).ok());
    clock_.Advance(absl::Microseconds(1));
  }
  auto first = b->TryNextBatch();
  EXPECT_EQ(Ids(*first), (std::vector<int>{0, 2, 4}));
  b->BatchDone(0);
  auto second = b->TryNextBatch();
  EXPECT_EQ(Ids(*second), (std::vector<int>{1, 3}));
  // The kind-2 tasks come back for their second step: older than anything
  // new, they run next, alone.
  b->Resubmit(0, std::move(second->tasks[0]));
  b->Resubmit(0, std::move(second->tasks[1]));
  b->BatchDone(0);
  auto later = Tasks(10, 1, &log_);
  later[0]->kind = 2;
  ASSERT_TRUE(b->Submit(0, std::move(later)).ok());
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{1, 3}));
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{10}));
}

TEST_F(BatcherTest, FullQueueRejectsTheWholeRequest) {
  auto b = Make(2, absl::Milliseconds(5), /*max_queue=*/4);
  ASSERT_TRUE(b->Submit(0, Tasks(0, 3, &log_)).ok());
  absl::Status status = b->Submit(0, Tasks(3, 2, &log_));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("model0"), absl::string_view::npos);
  EXPECT_EQ(b->QueueDepth(0), 3u);  // nothing of the rejected request was queued
  EXPECT_TRUE(b->Submit(0, Tasks(3, 1, &log_)).ok());
}

TEST_F(BatcherTest, CancelledAndExpiredTasksAreDroppedBeforeCompute) {
  auto b = Make(4, absl::Milliseconds(10));
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::unique_ptr<ImageTask>> tasks;
  tasks.push_back(std::make_unique<TestTask>(0, &log_, cancelled));
  tasks.push_back(std::make_unique<TestTask>(1, &log_));
  tasks.push_back(std::make_unique<TestTask>(2, &log_, nullptr, clock_.Now() + absl::Milliseconds(5)));
  ASSERT_TRUE(b->Submit(0, std::move(tasks)).ok());
  *cancelled = true;
  clock_.Advance(absl::Milliseconds(10));
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{1}));
  EXPECT_EQ(log_.dropped, 2);
  absl::MutexLock lock(&log_.mu);
  // Served earliest deadline first, the expired task is queued ahead of the cancelled one.
  EXPECT_EQ(log_.codes,
            (std::vector<absl::StatusCode>{absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kCancelled}));
  EXPECT_TRUE(log_.unmeetable.empty());
}

TEST_F(BatcherTest, EarliestDeadlineIsServedFirstAndCallsWithoutOneByArrival) {
  auto b = Make(1, absl::ZeroDuration());
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(b->Submit(0, Tasks(0, 1, &log_)).ok());  // no deadline
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(b->Submit(0, Due(1, &log_, t0 + absl::Seconds(3))).ok());
  ASSERT_TRUE(b->Submit(0, Due(2, &log_, t0 + absl::Seconds(1))).ok());
  ASSERT_TRUE(b->Submit(0, Tasks(3, 1, &log_)).ok());                    // no deadline, later
  ASSERT_TRUE(b->Submit(0, Due(4, &log_, t0 + absl::Seconds(1))).ok());  // same deadline as 2, later
  std::vector<int> order;
  while (auto batch = b->TryNextBatch()) {
    order.push_back(Ids(*batch).at(0));
    b->BatchDone(0);
  }
  EXPECT_EQ(order, (std::vector<int>{2, 4, 1, 0, 3}));
}

TEST_F(BatcherTest, WithoutDeadlineAwarenessTheQueueIsFirstComeFirstServed) {
  auto b = Make(1, absl::ZeroDuration(), 100, 1, /*deadline_aware=*/false);
  b->ObservePass(0, 1, absl::Milliseconds(50));
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(b->Submit(0, Due(0, &log_, t0 + absl::Seconds(3))).ok());
  ASSERT_TRUE(b->Submit(0, Due(1, &log_, t0 + absl::Milliseconds(10))).ok());  // cannot make it, still served
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0}));
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{1}));
  EXPECT_EQ(log_.dropped.load(), 0);
}

// Every queued task is judged against a pass of the batch that forms now,
// times the passes it still needs; the unmeetable ones never reach compute.
TEST_F(BatcherTest, TasksThatCannotMeetTheirDeadlineAreDroppedBeforeCompute) {
  auto b = Make(4, absl::ZeroDuration());
  b->ObservePass(0, 4, absl::Milliseconds(30));
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(b->Submit(0, Due(0, &log_, t0 + absl::Milliseconds(20))).ok());      // 30 ms > 20 ms
  ASSERT_TRUE(b->Submit(0, Due(1, &log_, t0 + absl::Milliseconds(50), 2)).ok());   // 2 x 30 ms > 50 ms
  ASSERT_TRUE(b->Submit(0, Due(2, &log_, t0 + absl::Milliseconds(100), 2)).ok());  // 60 ms: in time
  ASSERT_TRUE(b->Submit(0, Due(3, &log_, t0 + absl::Milliseconds(31))).ok());      // 30 ms: in time
  ASSERT_TRUE(b->Submit(0, Tasks(4, 1, &log_)).ok());                              // no deadline
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{3, 2, 4}));
  absl::MutexLock lock(&log_.mu);
  EXPECT_EQ(log_.unmeetable, (std::vector<int>{0, 1}));
  EXPECT_EQ(log_.last_drop.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(log_.last_drop.message().find("cannot be met"), absl::string_view::npos) << log_.last_drop;
}

TEST_F(BatcherTest, AReturningTaskIsJudgedByTheStepsItHasLeft) {
  auto b = Make(2, absl::ZeroDuration());
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(b->Submit(0, Due(0, &log_, t0 + absl::Milliseconds(70), 2)).ok());
  auto first = b->TryNextBatch();  // nothing observed yet: nothing is judged
  ASSERT_NE(first, nullptr);
  b->ObservePass(0, 1, absl::Milliseconds(30));
  clock_.Advance(absl::Milliseconds(30));
  first->tasks[0]->steps_left = 1;
  b->Resubmit(0, std::move(first->tasks[0]));
  b->BatchDone(0);
  auto second = b->TryNextBatch();  // at 30 ms: one pass left ends at 60 ms; two would end at 90 ms
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(Ids(*second), (std::vector<int>{0}));
  EXPECT_EQ(log_.dropped.load(), 0);
}

TEST_F(BatcherTest, ThePassTimeIsJudgedAtTheSizeOfTheBatchThatForms) {
  auto b = Make(4, absl::ZeroDuration());
  b->ObservePass(0, 1, absl::Milliseconds(10));
  b->ObservePass(0, 4, absl::Milliseconds(40));
  EXPECT_EQ(b->EstimatedPassTime(0, 2), absl::Milliseconds(20));
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(b->Submit(0, Due(0, &log_, t0 + absl::Milliseconds(25))).ok());
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0}));  // alone: about 10 ms
  b->BatchDone(0);
  for (int id = 1; id <= 4; ++id) ASSERT_TRUE(b->Submit(0, Due(id, &log_, t0 + absl::Milliseconds(25))).ok());
  EXPECT_EQ(b->TryNextBatch(), nullptr);  // four together need about 40 ms: all dropped
  absl::MutexLock lock(&log_.mu);
  EXPECT_EQ(log_.unmeetable, (std::vector<int>{1, 2, 3, 4}));
}

// Tasks of `count` images at priority `level`, ids from `first`.
std::vector<std::unique_ptr<ImageTask>> AtLevel(int level, int first, int count, Log* log) {
  auto tasks = Tasks(first, count, log);
  for (auto& t : tasks) t->priority = level;
  return tasks;
}

class PriorityBatcherTest : public BatcherTest {
 protected:
  std::unique_ptr<Batcher> MakeLevels(size_t max_batch, size_t max_queue, int levels,
                                      std::vector<std::tuple<int, size_t>>* depths = nullptr) {
    Batcher::Options options;
    options.clock = &clock_;
    options.models.push_back({"m", max_batch, absl::ZeroDuration(), max_queue});
    options.models.back().priority_levels = levels;
    if (depths != nullptr)
      options.on_queue_depth = [depths](int, int level, size_t depth) { depths->emplace_back(level, depth); };
    auto batcher = Batcher::Create(options);
    EXPECT_TRUE(batcher.ok()) << batcher.status();
    return std::move(*batcher);
  }
};

TEST_F(PriorityBatcherTest, TheHighestLevelFillsTheBatchFirst) {
  auto b = MakeLevels(3, 100, 3);
  ASSERT_TRUE(b->Submit(0, AtLevel(3, 0, 2, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 10, 2, &log_)).ok());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(b->Submit(0, AtLevel(1, 20, 1, &log_)).ok());  // newest, yet first
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{20, 10, 11}));
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0, 1}));
}

// A returning second step goes ahead of new work of its own and lower
// levels, not ahead of new work of a higher level.
TEST_F(PriorityBatcherTest, AReturningTaskKeepsItsLevel) {
  auto b = MakeLevels(4, 100, 2);
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 0, 1, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, AtLevel(1, 1, 1, &log_)).ok());
  auto first = b->TryNextBatch();
  ASSERT_EQ(Ids(*first), (std::vector<int>{1, 0}));
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 20, 2, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, AtLevel(1, 10, 1, &log_)).ok());
  b->Resubmit(0, std::move(first->tasks[1]));  // level 2
  b->Resubmit(0, std::move(first->tasks[0]));  // level 1
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{1, 10, 0, 20}));
}

// Without step mixing, a batch of new work still fills across levels; the
// returning task waits for a batch of its own.
TEST_F(PriorityBatcherTest, WithoutStepMixingABatchFillsAcrossLevelsFromOneList) {
  Batcher::Options options;
  options.clock = &clock_;
  options.models.push_back({"m", 4, absl::ZeroDuration(), 100});
  options.models.back().priority_levels = 2;
  options.models.back().mix_steps = false;
  auto b = std::move(*Batcher::Create(options));
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 0, 1, &log_)).ok());
  auto first = b->TryNextBatch();
  ASSERT_EQ(Ids(*first), (std::vector<int>{0}));
  ASSERT_TRUE(b->Submit(0, AtLevel(1, 10, 1, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 20, 3, &log_)).ok());
  b->Resubmit(0, std::move(first->tasks[0]));  // level 2, returning
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{10, 20, 21, 22}));
  b->BatchDone(0);
  EXPECT_EQ(Ids(*b->TryNextBatch()), (std::vector<int>{0}));
}

TEST_F(PriorityBatcherTest, EachLevelHasAQueueOfItsOwn) {
  auto b = MakeLevels(2, 4, 2);
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 0, 4, &log_)).ok());
  const absl::Status full = b->Submit(0, AtLevel(2, 4, 1, &log_));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("4 of 4 images queued at priority 2"), absl::string_view::npos) << full;
  EXPECT_TRUE(b->Submit(0, AtLevel(1, 10, 4, &log_)).ok()) << "a flood at level 2 leaves level 1 its room";
  EXPECT_EQ(b->QueueDepth(0), 8u);
  const absl::Status bad = b->Submit(0, AtLevel(3, 20, 1, &log_));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(b->Submit(0, AtLevel(0, 20, 1, &log_)).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PriorityBatcherTest, QueueDepthIsReportedPerLevel) {
  std::vector<std::tuple<int, size_t>> depths;
  auto b = MakeLevels(2, 10, 2, &depths);
  ASSERT_TRUE(b->Submit(0, AtLevel(2, 0, 3, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, AtLevel(1, 10, 1, &log_)).ok());
  depths.clear();
  auto batch = b->TryNextBatch();  // 10 and 0 taken
  EXPECT_EQ(depths, (std::vector<std::tuple<int, size_t>>{{1, 0}, {2, 2}}));
  b->Resubmit(0, std::move(batch->tasks[0]));  // 10 returns at level 1
  EXPECT_EQ(depths.back(), std::make_tuple(2, size_t{2}));
  EXPECT_EQ(depths[depths.size() - 2], std::make_tuple(1, size_t{1}));
}

TEST_F(BatcherTest, CloseRejectsNewWorkAndDrainsQueuedWorkAtOnce) {
  auto b = Make(4, absl::Seconds(100));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 1, &log_)).ok());
  b->Close();
  EXPECT_EQ(b->Submit(0, Tasks(1, 1, &log_)).code(), absl::StatusCode::kUnavailable);
  auto batch = b->NextBatch();  // no waiting for the delay while draining
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{0}));
  b->Resubmit(0, std::move(batch->tasks[0]));  // a second step still runs after Close
  b->BatchDone(0);
  batch = b->NextBatch();
  ASSERT_NE(batch, nullptr);
  b->BatchDone(0);
  EXPECT_EQ(b->NextBatch(), nullptr);  // closed, empty, nothing in flight
}

TEST_F(BatcherTest, CutQueuedDropsWaitingAndReturningWorkAndTheBatchInFlightEndsIt) {
  auto b = Make(2, absl::Seconds(100), 100, /*models=*/2);
  ASSERT_TRUE(b->Submit(0, Tasks(0, 2, &log_)).ok());
  ASSERT_TRUE(b->Submit(0, Tasks(2, 3, &log_)).ok());
  ASSERT_TRUE(b->Submit(1, Tasks(5, 1, &log_)).ok());
  auto batch = b->TryNextBatch();  // in flight: tasks 0 and 1
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(Ids(*batch), (std::vector<int>{0, 1}));
  b->CutQueued(absl::UnavailableError("drain time ran out"));
  EXPECT_EQ(log_.dropped, 4);  // 2, 3, 4 of model 0 and 5 of model 1
  EXPECT_EQ(b->QueueDepth(0), 0u);
  EXPECT_EQ(b->QueueDepth(1), 0u);
  EXPECT_EQ(b->Submit(0, Tasks(6, 1, &log_)).code(), absl::StatusCode::kUnavailable);
  b->Resubmit(0, std::move(batch->tasks[0]));  // its next step is not run: dropped with the reason
  EXPECT_EQ(log_.dropped, 5);
  EXPECT_EQ(log_.last_drop.message(), "drain time ran out");
  EXPECT_EQ(b->QueueDepth(0), 0u);
  b->BatchDone(0);
  EXPECT_EQ(b->NextBatch(), nullptr);  // nothing waits and nothing is in flight: the workers end
  absl::MutexLock lock(&log_.mu);
  for (absl::StatusCode code : log_.codes) EXPECT_EQ(code, absl::StatusCode::kUnavailable);
}

TEST_F(BatcherTest, OldestReadyModelGoesFirst) {
  auto b = Make(2, absl::Milliseconds(10), 100, /*models=*/2);
  ASSERT_TRUE(b->Submit(1, Tasks(100, 1, &log_)).ok());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(b->Submit(0, Tasks(0, 1, &log_)).ok());
  clock_.Advance(absl::Milliseconds(20));
  auto batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 1);
  batch = b->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 0);
}

// A worker that runs only some models takes batches of those only, however
// old the others' work; abandoned work of any model is still dropped.
TEST_F(BatcherTest, ACallerTakesBatchesOfTheModelsItServesOnly) {
  auto b = Make(2, absl::Milliseconds(10), 100, /*models=*/2);
  ASSERT_TRUE(b->Submit(0, Tasks(0, 2, &log_)).ok());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(b->Submit(1, Tasks(100, 2, &log_)).ok());
  const Batcher::ModelSet only_model_1 = {false, true};
  auto batch = b->TryNextBatch(only_model_1);
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 1);
  EXPECT_EQ(b->TryNextBatch(only_model_1), nullptr);
  EXPECT_EQ(b->QueueDepth(0), 2u);  // model 0's older work waits for its own workers
  batch = b->TryNextBatch({true, false});
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->model, 0);

  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::unique_ptr<ImageTask>> doomed;
  doomed.push_back(std::make_unique<TestTask>(7, &log_, cancelled));
  ASSERT_TRUE(b->Submit(0, std::move(doomed)).ok());
  *cancelled = true;
  EXPECT_EQ(b->TryNextBatch(only_model_1), nullptr);
  EXPECT_EQ(log_.dropped.load(), 1);
  EXPECT_EQ(b->QueueDepth(0), 0u);
}

TEST_F(BatcherTest, ReportsQueueDepthOnEveryChange) {
  std::vector<size_t> depths;
  Batcher::Options options;
  options.clock = &clock_;
  options.models.push_back({"m", 2, absl::Milliseconds(5), 100});
  options.on_queue_depth = [&depths](int model, int level, size_t depth) {
    EXPECT_EQ(model, 0);
    EXPECT_EQ(level, 1);
    depths.push_back(depth);
  };
  auto b = std::move(*Batcher::Create(options));
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::unique_ptr<ImageTask>> tasks = Tasks(0, 2, &log_);
  tasks.push_back(std::make_unique<TestTask>(2, &log_, cancelled));
  ASSERT_TRUE(b->Submit(0, std::move(tasks)).ok());  // 3 queued
  auto batch = b->TryNextBatch();                    // 2 taken: 1 left
  b->Resubmit(0, std::move(batch->tasks[0]));        // 2
  b->BatchDone(0);
  *cancelled = true;
  b->TryNextBatch();  // the cancelled one dropped (1), then 1 taken (0)
  EXPECT_EQ(depths, (std::vector<size_t>{3, 1, 2, 1, 0}));
}

TEST_F(BatcherTest, RejectsBadOptions) {
  Batcher::Options options;
  EXPECT_FALSE(Batcher::Create(options).ok());
  options.models.push_back({"m", 8, absl::Milliseconds(1), 4});
  auto status = Batcher::Create(options).status();
  EXPECT_NE(status.message().find("max_queue_size (4) must be at least max_batch_size (8)"), absl::string_view::npos);
}

// Many submitters and workers at once (run under ThreadSanitizer by make test-sanitize):
// every image is served exactly once per step, and the workers stop after Close.
TEST(BatcherConcurrencyTest, EveryTaskIsServedOnceAcrossThreads) {
  Batcher::Options options;
  options.models.push_back({"a", 4, absl::ZeroDuration(), 10000});
  options.models.push_back({"b", 3, absl::ZeroDuration(), 10000});
  auto batcher = std::move(*Batcher::Create(options));
  Log log;
  constexpr int kSubmitters = 4, kRequests = 50, kImages = 3;
  std::vector<std::atomic<int>> steps_run(kSubmitters * kRequests * kImages);
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w) {
    workers.emplace_back([&] {
      while (auto batch = batcher->NextBatch()) {
        for (auto& task : batch->tasks) {
          const int id = static_cast<TestTask&>(*task).id;
          if (steps_run[id].fetch_add(1) == 0 && id % 2 == 0) batcher->Resubmit(batch->model, std::move(task));
        }
        batcher->BatchDone(batch->model);
      }
    });
  }
  std::vector<std::thread> submitters;
  for (int s = 0; s < kSubmitters; ++s) {
    submitters.emplace_back([&, s] {
      for (int r = 0; r < kRequests; ++r) {
        const int first = (s * kRequests + r) * kImages;
        ASSERT_TRUE(batcher->Submit(r % 2, Tasks(first, kImages, &log)).ok());
      }
    });
  }
  for (auto& t : submitters) t.join();
  batcher->Close();
  for (auto& t : workers) t.join();
  for (size_t id = 0; id < steps_run.size(); ++id) EXPECT_EQ(steps_run[id], id % 2 == 0 ? 2 : 1) << id;
  EXPECT_EQ(log.dropped, 0);
}

}  // namespace
}  // namespace tcm
