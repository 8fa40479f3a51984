#include "server/model_control.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cpu_features.h"
#include "common/utf8.h"
#include "model/model_config.h"
#include "model/sampler.h"

namespace tcm {
namespace fs = std::filesystem;

namespace {

// How often the control thread looks at versions waiting to retire or be freed.
constexpr auto kReapInterval = std::chrono::milliseconds(20);

}  // namespace

std::string DirectoryFingerprint(const std::string& dir) {
  std::string fingerprint;
  for (const char* file : {"config.pbtxt", "weights.safetensors", "labels.txt"}) {
    const std::string path = (fs::path(dir) / file).string();
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {  // follows symbolic links, as reading the file does
      absl::StrAppend(&fingerprint, file, ":none;");
      continue;
    }
    // Size and modification time miss a replacement that keeps both (cp -p,
    // rsync -a, touch -r); a new file has another inode, and a rewrite in
    // place moves the change time, which no one can set back.
    absl::StrAppend(&fingerprint, file, ":", st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".",
                    st.st_mtim.tv_nsec, ":", st.st_ctim.tv_sec, ".", st.st_ctim.tv_nsec, ";");
  }
  return fingerprint;
}

ModelControl::ModelControl(Parts parts, const std::vector<ModelDirectory>& loaded, const std::string& default_model)
    : parts_(std::move(parts)), default_model_(default_model) {
  const std::shared_ptr<const ModelTable> table = parts_.catalog->Get();
  for (const ServedModel& served : table->models) {
    const ModelDirectory& dir = loaded.at(served.slot);
    entries_[served.name] = Entry{dir.path, DirectoryFingerprint(dir.path), served};
    last_version_[served.name] = served.version;
  }
  published_.push_back(table);
}

ModelControl::~ModelControl() { Stop(); }

void ModelControl::Start() {
  if (!parts_.gate_file.empty())
    std::fprintf(stderr, "tcm-server: TCM_TEST_CONTROL_GATE is set: model control waits while %s exists\n",
                 parts_.gate_file.c_str());
  thread_ = std::thread([this] { Run(); });
}

void ModelControl::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<Job> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(jobs_);
  }
  for (auto& job : left) job(absl::UnavailableError("the server is shutting down"));
}

void ModelControl::Load(const std::string& name, std::function<void(absl::StatusOr<ServedModel>)> done) {
  auto job = [this, name, done = std::move(done)](const absl::Status& refused) {
    if (!refused.ok()) return done(refused);
    // Checked before the name reaches the file system, which would read a
    // name with a NUL byte as its part before the NUL.
    if (absl::Status named = CheckModelName(name); !named.ok())
      return done(absl::InvalidArgumentError(absl::StrCat("name: ", named.message())));
    fs::path dir = fs::path(parts_.options.model_repository) / name;
    std::error_code ec;
    if (!fs::exists(dir / "config.pbtxt", ec)) {
      const auto it = entries_.find(name);  // a model whose config names it other than its directory
      if (it == entries_.end())
        return done(absl::NotFoundError(absl::StrCat("name: no model directory '", name, "' (a folder with a ",
                                                     "config.pbtxt) in ", parts_.options.model_repository)));
      dir = it->second.dir;
    }
    absl::StatusOr<ServedModel> loaded = absl::UnknownError("not loaded");
    try {  // LoadDirectory reports failures as statuses; an exception (an allocation) ends this call, not the server
      loaded = LoadDirectory(dir.string(), DirectoryFingerprint(dir.string()));
    } catch (const std::exception& e) {
      return done(absl::InternalError(absl::StrCat(dir.string(), ": loading failed: ", e.what())));
    }
    if (!loaded.ok()) return done(absl::InvalidArgumentError(loaded.status().message()));
    done(*std::move(loaded));
  };
  Enqueue(std::move(job));
}

void ModelControl::Unload(const std::string& name, std::function<void(absl::Status)> done) {
  auto job = [this, name, done = std::move(done)](const absl::Status& refused) {
    done(refused.ok() ? UnloadModel(name) : refused);
  };
  Enqueue(std::move(job));
}

void ModelControl::Enqueue(Job job) {
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the server is shutting down");
    } else if (jobs_.size() >= kMaxPendingControlCalls) {
      refused =
          absl::ResourceExhaustedError(absl::StrCat(jobs_.size(), " model loads and unloads wait already (at most ",
                                                    kMaxPendingControlCalls, "); try again once they are done"));
    } else {
      jobs_.push_back(std::move(job));
      wake_.notify_all();
      return;
    }
  }
  job(refused);
}

void ModelControl::Run() {
  const bool poll = parts_.options.model_control == "poll";
  const auto poll_interval = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(parts_.options.repository_poll_s));
  auto next_poll = std::chrono::steady_clock::now() + poll_interval;
  while (true) {
    WaitAtGate();
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool reaping = !unlisted_.empty() || !retired_.empty();
      const auto woken = [&] { return stopping_ || !jobs_.empty(); };
      if (poll || reaping) {
        auto until = reaping ? std::chrono::steady_clock::now() + kReapInterval : next_poll;
        if (poll) until = std::min(until, next_poll);
        wake_.wait_until(lock, until, woken);
      } else {
        wake_.wait(lock, woken);
      }
      if (stopping_) return;
      if (!jobs_.empty()) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
    }
    if (job) job(absl::OkStatus());
    if (poll && std::chrono::steady_clock::now() >= next_poll) {
      try {  // LoadDirectory does not throw; a file system call here might: that pass is skipped
        Poll();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "tcm-server: reading the model repository %s failed: %s\n",
                     parts_.options.model_repository.c_str(), PrintableLine(e.what()).c_str());
      }
      next_poll = std::chrono::steady_clock::now() + poll_interval;
    }
    Reap();
  }
}

void ModelControl::WaitAtGate() {
  if (parts_.gate_file.empty()) return;
  std::error_code ec;
  while (fs::exists(parts_.gate_file, ec)) {
    std::unique_lock<std::mutex> lock(mu_);
    if (wake_.wait_for(lock, std::chrono::milliseconds(2), [this] { return stopping_; })) return;
  }
}

void ModelControl::Poll() {
  std::error_code ec;
  std::vector<std::string> dirs;
  for (fs::directory_iterator it(parts_.options.model_repository, ec), end; !ec && it != end; it.increment(ec)) {
    if (IsModelFolder(*it)) dirs.push_back(it->path().string());
  }
  if (ec) {
    std::fprintf(stderr, "tcm-server: cannot read the model repository %s: %s\n",
                 parts_.options.model_repository.c_str(), ec.message().c_str());
    return;  // a repository that cannot be read unloads nothing
  }
  std::sort(dirs.begin(), dirs.end());
  // Folders in a remembered name clash go last: when a served model's folder
  // is renamed, the renamed folder (not a clashing copy) takes the model over.
  std::stable_partition(dirs.begin(), dirs.end(), [this](const std::string& dir) { return !clashes_.count(dir); });
  const std::set<std::string> present(dirs.begin(), dirs.end());
  // New and changed directories first, removals after: a model whose folder
  // was renamed (its config names it) is loaded from the new folder as its
  // next version while the version from the old folder serves on, so no call
  // finds it missing (LoadDirectory).
  for (const std::string& dir : dirs) {
    const std::string fingerprint = DirectoryFingerprint(dir);
    if (const Entry* loaded = EntryFrom(dir); loaded != nullptr && loaded->fingerprint == fingerprint) continue;
    if (const auto failed = failed_.find(dir); failed != failed_.end() && failed->second == fingerprint) continue;
    if (const auto clash = clashes_.find(dir); clash != clashes_.end() && clash->second.fingerprint == fingerprint) {
      // Tried again once the name's other folder is gone, files unchanged.
      const auto owner = entries_.find(clash->second.name);
      if (owner != entries_.end() && present.count(owner->second.dir)) continue;
    }
    (void)LoadDirectory(dir, fingerprint);  // a failure is counted and logged there
  }
  std::vector<std::string> gone;
  for (const auto& [name, entry] : entries_)
    if (!present.count(entry.dir)) gone.push_back(name);
  for (const std::string& name : gone) (void)UnloadModel(name);
  for (auto it = failed_.begin(); it != failed_.end();)
    it = present.count(it->first) ? std::next(it) : failed_.erase(it);
  for (auto it = clashes_.begin(); it != clashes_.end();)
    it = present.count(it->first) ? std::next(it) : clashes_.erase(it);
}

const ModelControl::Entry* ModelControl::EntryFrom(const std::string& dir) const {
  for (const auto& [name, entry] : entries_)
    if (entry.dir == dir) return &entry;
  return nullptr;
}

absl::StatusOr<ServedModel> ModelControl::LoadDirectory(const std::string& dir, const std::string& fingerprint) {
  const Entry* old = EntryFrom(dir);
  std::string name = old ? old->served.name : fs::path(dir).filename().string();
  bool clash = false;  // the name is served from another folder: remembered apart from failed_
  auto fail = [&](const absl::Status& status) -> absl::Status {
    // A directory's name is the operator's; it labels a series only where it
    // could name a model, and reaches the log escaped, so a newline in it (or
    // in the message, which quotes the files) cannot forge a line.
    parts_.metrics->ModelLoadFailed(CheckModelName(name).ok() ? name : "invalid");
    if (clash) {
      clashes_[dir] = Clash{fingerprint, name};
    } else {
      failed_[dir] = fingerprint;
    }
    std::fprintf(stderr, "tcm-server: model '%s' was not loaded: %s%s\n", PrintableLine(name).c_str(),
                 PrintableLine(std::string(status.message())).c_str(),
                 old ? absl::StrCat(" (version ", old->served.version, " goes on serving)").c_str() : "");
    return status;
  };

  absl::StatusOr<ModelDirectory> model = ReadModelDirectory(dir);
  if (!model.ok()) return fail(model.status());
  if (old && model->name != old->served.name)
    return fail(absl::InvalidArgumentError(absl::StrCat(dir, "/config.pbtxt: name changed from '", old->served.name,
                                                        "' to '", model->name, "'; unload the model first")));
  name = model->name;
  const Entry* replaced = old;  // the entry this load replaces (a new version of it), if any
  std::string moved_from;
  if (!old && entries_.count(name)) {
    const Entry& owner = entries_.at(name);
    std::error_code ec;
    const fs::directory_entry owner_dir(owner.dir, ec);
    if (!ec && IsModelFolder(owner_dir)) {
      clash = true;
      return fail(absl::InvalidArgumentError(
          absl::StrCat(dir, ": a model named '", name, "' is already served from ", owner.dir)));
    }
    // The folder it was served from is gone (renamed or moved away): this
    // one holds the model now, loaded as its next version.
    replaced = &owner;
    moved_from = owner.dir;
  }
  if (absl::Status precision = ApplyPrecision(name, &model->config, parts_.options, CpuHasNativeBf16());
      !precision.ok())
    return fail(precision);
  auto queue = MergeQueueOptions(name, model->config, StepsShareNetwork(model->config), parts_.options);
  if (!queue.ok()) return fail(queue.status());
  auto slot = parts_.pool->AddModel(*model, *queue, parts_.options.warmup_batch_size);
  if (!slot.ok()) return fail(slot.status());

  ServedModel served = DescribeModel(name, model->config, model->labels, *queue);
  served.slot = *slot;
  served.version = ++last_version_[name];
  parts_.metrics->AddModel(served);
  const int old_slot = replaced ? replaced->served.slot : -1;
  const unsigned old_version = replaced ? replaced->served.version : 0;
  entries_[name] = Entry{dir, fingerprint, served};  // `old` and `replaced` point at the new entry from here
  failed_.erase(dir);
  clashes_.erase(dir);
  Publish();
  if (old_slot >= 0) {
    parts_.metrics->HideModelInfo(old_slot);
    unlisted_.push_back(old_slot);
    leaving_[old_slot] = absl::StrCat("model '", name, "' version ", old_version);
  }
  parts_.metrics->ShowModelInfo(*slot);
  parts_.health->SetModelServing(name, true);
  std::printf(
      "tcm-server: model '%s' version %u loaded from %s%s\n", name.c_str(), served.version, PrintableLine(dir).c_str(),
      moved_from.empty() ? "" : absl::StrCat(" (its folder moved from ", PrintableLine(moved_from), ")").c_str());
  std::fflush(stdout);
  return served;
}

absl::Status ModelControl::UnloadModel(const std::string& name) {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    std::vector<std::string> names;
    for (const auto& [served, entry] : entries_) names.push_back(served);
    return absl::NotFoundError(
        absl::StrCat("name: model '", name, "' is not served (served: ", absl::StrJoin(names, ", "), ")"));
  }
  const ServedModel served = it->second.served;
  entries_.erase(it);
  Publish();
  parts_.metrics->HideModelInfo(served.slot);
  parts_.health->SetModelServing(name, false);
  unlisted_.push_back(served.slot);
  leaving_[served.slot] = absl::StrCat("model '", name, "' version ", served.version);
  std::printf("tcm-server: model '%s' version %u unloaded\n", name.c_str(), served.version);
  std::fflush(stdout);
  return absl::OkStatus();
}

void ModelControl::Publish() {
  ModelTable table;
  table.default_model = -1;
  for (const auto& [name, entry] : entries_) {  // by name, as at start
    if (name == default_model_) table.default_model = static_cast<int>(table.models.size());
    table.models.push_back(entry.served);
  }
  published_.push_back(parts_.catalog->Publish(std::move(table)));
  published_.erase(std::remove_if(published_.begin(), published_.end(), [](const auto& t) { return t.expired(); }),
                   published_.end());
}

bool ModelControl::SlotListed(int slot) {
  for (const auto& weak : published_)
    if (auto table = weak.lock())
      for (const ServedModel& m : table->models)
        if (m.slot == slot) return true;
  return false;
}

void ModelControl::Reap() {
  // A version no table lists can get no new call: from now on the batcher
  // refuses work for it (none can come), and its own work drains.
  for (auto it = unlisted_.begin(); it != unlisted_.end();) {
    if (SlotListed(*it)) {
      ++it;
      continue;
    }
    parts_.batcher->RetireModel(*it);
    retired_.push_back(*it);
    it = unlisted_.erase(it);
  }
  for (auto it = retired_.begin(); it != retired_.end();) {
    if (!parts_.batcher->ModelIdle(*it)) {
      ++it;
      continue;
    }
    parts_.pool->RemoveModel(*it);
    parts_.metrics->QueueFreed(*it);
    std::printf("tcm-server: %s finished its last call; its replicas are freed\n", leaving_[*it].c_str());
    std::fflush(stdout);
    leaving_.erase(*it);
    it = retired_.erase(it);
  }
}

}  // namespace tcm
