// The C library's allocator tuned for repeated forward passes: freed
// activation memory stays in the process for the next pass instead of going
// back to the kernel, which then had to fault in and zero fresh pages every
// pass. Set once per process, before the first forward pass.
#ifndef TCM_MODEL_MALLOC_CONFIG_H_
#define TCM_MODEL_MALLOC_CONFIG_H_

namespace tcm {

// With glibc: blocks up to 32 MiB come from the heap rather than their own
// mmap (so freeing them unmaps nothing), the heap is not trimmed below 1 GiB
// of free space, and it grows 64 MiB beyond each request. Measured on the
// embedded network, served batches of 16 took 124 ms without this and 68 ms
// with it (docs/PERFORMANCE.md). Returns false where an option was refused.
bool KeepFreedMemoryForReuse();

}  // namespace tcm

#endif  // TCM_MODEL_MALLOC_CONFIG_H_
