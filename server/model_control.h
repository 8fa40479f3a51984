// Models added, replaced and removed while the server runs (--model_control):
// poll mode reads the model repository every --repository_poll_s, explicit
// mode acts on LoadModel and UnloadModel.
//
// A load reads and validates the directory, then builds and warms up its
// replicas beside the version serving now (WorkerPool::AddModel) and
// publishes a new ModelTable: new calls go to the new version, calls already
// on the old one finish there. Once no call can still submit to the old
// version (no one holds a table that lists it) the batcher stops taking work
// for it, and once its queue is empty and no batch of it runs, its replicas
// and its queue are freed. An unload does the same without a successor. A
// directory that fails to load leaves the version serving now as it is, counts in
// tcm_model_load_failures_total and logs one line; in poll mode it is tried
// again once its files change (a directory still being copied is read again
// until it is whole). A poll loads new and changed directories before it
// unloads vanished ones: a folder renamed while its config names the model
// is that model's next version, with no gap. A directory refused because its
// model's name is served from another folder is tried again once that
// folder is gone, its files unchanged.
//
// Everything runs on the control's own thread, one operation at a time; at
// most kMaxPendingControlCalls Load and Unload calls wait for it (more are
// refused RESOURCE_EXHAUSTED). A model's version counts its loads since the
// server started, across unloads, so a name's (name, version) pair never
// stands for two loads (the response cache keys on it).
#ifndef TCM_SERVER_MODEL_CONTROL_H_
#define TCM_SERVER_MODEL_CONTROL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/model_repository.h"
#include "server/batcher.h"
#include "server/health_service.h"
#include "server/metrics.h"
#include "server/model_control_api.h"
#include "server/served_model.h"
#include "server/server_options.h"
#include "server/worker_pool.h"

namespace tcm {

// What a model directory's files look like (device, inode, size,
// modification and change time of config.pbtxt, weights.safetensors and
// labels.txt): a change to any of them changes it, also a replacement that
// keeps the size and the modification time (cp -p, rsync -a, touch -r).
std::string DirectoryFingerprint(const std::string& dir);

// Most Load and Unload calls waiting for the control's thread.
inline constexpr size_t kMaxPendingControlCalls = 16;

class ModelControl final : public ModelControlApi {
 public:
  struct Parts {
    ServerOptions options;  // model_control, repository_poll_s, precision and batching flags
    WorkerPool* pool = nullptr;
    Batcher* batcher = nullptr;
    ServerMetrics* metrics = nullptr;
    ModelCatalog* catalog = nullptr;
    HealthService* health = nullptr;
    // Tests only (TCM_TEST_CONTROL_GATE): while this file exists the control's
    // thread takes no call and polls and reaps nothing, so calls stay queued.
    std::string gate_file;
  };

  // `loaded`: the models served at start, in the order of their slots
  // (0..n-1), which the catalog already lists; `default_model` names the
  // default (it stays the default while a model of that name is served).
  ModelControl(Parts parts, const std::vector<ModelDirectory>& loaded, const std::string& default_model);
  ~ModelControl() override;

  // Starts the control's thread (after the workers started).
  void Start();
  // Stops it; queued Load and Unload calls end UNAVAILABLE.
  void Stop();

  void Load(const std::string& name, std::function<void(absl::StatusOr<ServedModel>)> done) override;
  void Unload(const std::string& name, std::function<void(absl::Status)> done) override;

 private:
  struct Entry {
    std::string dir;          // the model directory it was loaded from
    std::string fingerprint;  // of `dir` when it was read
    ServedModel served;
  };

  // Runs `job` on the control's thread with an OK status, or at once with
  // why it will not run: UNAVAILABLE once the control is stopping,
  // RESOURCE_EXHAUSTED when kMaxPendingControlCalls jobs wait already.
  using Job = std::function<void(const absl::Status& refused)>;
  void Enqueue(Job job);
  void Run();
  // Returns once Parts::gate_file is absent or the control is stopping.
  void WaitAtGate();
  // One pass over the repository (poll mode).
  void Poll();
  // Loads `dir`, whose files looked like `fingerprint` (DirectoryFingerprint)
  // just before, as a new model or a new version of the one loaded from it.
  // A directory whose config names a model served from a folder that is no
  // longer a model folder (renamed or moved away) takes that model over as
  // its next version; one whose model is served from a folder still there is
  // refused (and remembered in clashes_, not failed_).
  absl::StatusOr<ServedModel> LoadDirectory(const std::string& dir, const std::string& fingerprint);
  // The entry loaded from `dir`; null when none is.
  const Entry* EntryFrom(const std::string& dir) const;
  // Takes `name` out of the catalog; its version retires.
  absl::Status UnloadModel(const std::string& name);
  // Publishes the entries as the new table.
  void Publish();
  // Retires and frees the versions no longer served, as far as they can be now.
  void Reap();
  bool SlotListed(int slot);

  const Parts parts_;
  const std::string default_model_;
  std::map<std::string, Entry> entries_;       // by model name; control thread only
  std::map<std::string, std::string> failed_;  // dir -> fingerprint of its last failed read (poll mode)
  // A directory whose model's name is served from another folder: not a
  // failure of its files, so poll mode tries it again once that folder is
  // gone (or its files change), not only on a change.
  struct Clash {
    std::string fingerprint;  // of the directory when it was refused
    std::string name;         // the name it claims
  };
  std::map<std::string, Clash> clashes_;                    // by dir
  std::vector<std::weak_ptr<const ModelTable>> published_;  // every table that may still be held
  std::vector<int> unlisted_;                               // slots taken out of the catalog, not yet retired
  std::vector<int> retired_;                                // slots retired, replicas not yet freed
  std::map<int, std::string> leaving_;                      // slot -> "model 'NAME' version N", for the log
  std::map<std::string, unsigned> last_version_;            // by model name, kept across unloads

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace tcm

#endif  // TCM_SERVER_MODEL_CONTROL_H_
