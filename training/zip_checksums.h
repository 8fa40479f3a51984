// Checks the CRC-32 of every record of a zip archive, such as a LibTorch
// checkpoint: LibTorch's reader does not, so a damaged record would load as
// wrong numbers.
#ifndef TCM_TRAINING_ZIP_CHECKSUMS_H_
#define TCM_TRAINING_ZIP_CHECKSUMS_H_

#include <string>

#include "absl/status/status.h"

namespace tcm {

// OK when `path` is a zip archive (ZIP64 too) whose every record, stored or
// deflated (LibTorch deflates a module's code), lies before the central
// directory, the records together no larger than what lies there, and
// matches the CRC-32 the directory gives. Otherwise DataLoss in one line
// naming the record or what is wrong with the archive, but not the file (the
// caller does), or RegularFile::Open's error (which does).
absl::Status VerifyZipChecksums(const std::string& path);

}  // namespace tcm

#endif  // TCM_TRAINING_ZIP_CHECKSUMS_H_
