// absl::Status at the gRPC edge: conversion in one place.
#ifndef TCM_SERVER_STATUS_UTIL_H_
#define TCM_SERVER_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace tcm {

grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "INVALID_ARGUMENT", ... (the gRPC code names, used as metric labels).
std::string StatusCodeName(absl::StatusCode code);

}  // namespace tcm

#endif  // TCM_SERVER_STATUS_UTIL_H_
