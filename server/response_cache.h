// An exact cache of encoded images. A seeded image is a pure function of
// (model, class, steps, seed, index, format) on a server whose model and
// precision do not change, so it can be served again byte for byte without
// queue or compute. Least recently used entries are evicted first, by bytes.
// Thread-safe; torch-free.
#ifndef TCM_SERVER_RESPONSE_CACHE_H_
#define TCM_SERVER_RESPONSE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

// What a cached image is a function of.
struct ImageKey {
  std::string model;
  unsigned version = 1;  // of the model: a reloaded model never serves its old images
  int64_t class_label = -1;
  unsigned steps = 1;
  uint64_t seed = 0;
  unsigned index = 0;
  int format = 0;  // v1::ImageFormat

  bool operator==(const ImageKey& other) const;
};

struct ImageKeyHash {
  size_t operator()(const ImageKey& key) const;
};

class ResponseCache {
 public:
  // Holds at most `capacity_bytes` of entries (each counted as its image's
  // serialized size plus its key's). `on_bytes`, if set, is called with the
  // bytes held after every change, under the cache's lock: keep it short.
  explicit ResponseCache(size_t capacity_bytes, std::function<void(size_t)> on_bytes = nullptr)
      : capacity_(capacity_bytes), on_bytes_(std::move(on_bytes)) {}

  // The image cached under `key`, which becomes the most recently used.
  std::optional<v1::Image> Lookup(const ImageKey& key);

  // Caches `image` under `key` (replacing an entry of that key), evicting the
  // least recently used entries until it fits; an image larger than the
  // whole capacity is not kept.
  void Insert(const ImageKey& key, const v1::Image& image);

  size_t bytes() const;
  size_t entries() const;

 private:
  using Entry = std::pair<ImageKey, v1::Image>;
  static size_t Size(const Entry& entry);

  const size_t capacity_;
  const std::function<void(size_t)> on_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> entries_;  // most recently used first; guarded by mu_
  std::unordered_map<ImageKey, std::list<Entry>::iterator, ImageKeyHash> index_;  // guarded by mu_
  size_t bytes_ = 0;                                                              // guarded by mu_
};

}  // namespace tcm

#endif  // TCM_SERVER_RESPONSE_CACHE_H_
