// Early-return helpers for absl::Status / absl::StatusOr, which Abseil 20220623
// does not provide. Header-only.
#ifndef TCM_COMMON_STATUS_MACROS_H_
#define TCM_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define TCM_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status tcm_status_ = (expr);       \
    if (!tcm_status_.ok()) return tcm_status_; \
  } while (0)

#define TCM_STATUS_CONCAT_INNER_(a, b) a##b
#define TCM_STATUS_CONCAT_(a, b) TCM_STATUS_CONCAT_INNER_(a, b)

// `TCM_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of an
// absl::StatusOr or returns its error from the enclosing function.
#define TCM_ASSIGN_OR_RETURN(lhs, expr) \
  TCM_ASSIGN_OR_RETURN_IMPL_(TCM_STATUS_CONCAT_(tcm_statusor_, __LINE__), lhs, expr)

#define TCM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()

#endif  // TCM_COMMON_STATUS_MACROS_H_
