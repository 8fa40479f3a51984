// What tcm.v1's LoadModel and UnloadModel calls ask of model control
// (ModelControl, on the LibTorch side). Torch-free.
#ifndef TCM_SERVER_MODEL_CONTROL_API_H_
#define TCM_SERVER_MODEL_CONTROL_API_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/served_model.h"

namespace tcm {

class ModelControlApi {
 public:
  virtual ~ModelControlApi() = default;
  // Loads model directory `name`, or reloads it as a new version; `done`
  // runs once, on another thread, with the version serving now or why not
  // (NOT_FOUND: no such directory; INVALID_ARGUMENT: it does not load, the
  // version serving before goes on; UNAVAILABLE: the server is stopping).
  virtual void Load(const std::string& name, std::function<void(absl::StatusOr<ServedModel>)> done) = 0;
  // Stops serving model `name` (NOT_FOUND if it is not served); `done` as for Load.
  virtual void Unload(const std::string& name, std::function<void(absl::Status)> done) = 0;
};

}  // namespace tcm

#endif  // TCM_SERVER_MODEL_CONTROL_API_H_
