#include "server/response_cache.h"

#include <functional>
#include <tuple>

#include "common/splitmix.h"

namespace tcm {

bool ImageKey::operator==(const ImageKey& o) const {
  return std::tie(model, version, class_label, steps, seed, index, format) ==
         std::tie(o.model, o.version, o.class_label, o.steps, o.seed, o.index, o.format);
}

size_t ImageKeyHash::operator()(const ImageKey& key) const {
  uint64_t h = std::hash<std::string>()(key.model);
  for (uint64_t part : {uint64_t{key.version}, static_cast<uint64_t>(key.class_label), uint64_t{key.steps}, key.seed,
                        uint64_t{key.index}, static_cast<uint64_t>(key.format)})
    h = SplitMix64(h ^ part);
  return static_cast<size_t>(h);
}

size_t ResponseCache::Size(const Entry& entry) {
  return entry.second.ByteSizeLong() + entry.first.model.size() + sizeof(Entry);
}

std::optional<v1::Image> ResponseCache::Lookup(const ImageKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  entries_.splice(entries_.begin(), entries_, it->second);
  return it->second->second;
}

void ResponseCache::Insert(const ImageKey& key, const v1::Image& image) {
  Entry entry{key, image};
  const size_t size = Size(entry);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= Size(*it->second);
    entries_.erase(it->second);
    index_.erase(it);
  }
  if (size > capacity_) {
    if (on_bytes_) on_bytes_(bytes_);
    return;
  }
  while (bytes_ + size > capacity_ && !entries_.empty()) {
    bytes_ -= Size(entries_.back());
    index_.erase(entries_.back().first);
    entries_.pop_back();
  }
  entries_.push_front(std::move(entry));
  index_.emplace(key, entries_.begin());
  bytes_ += size;
  if (on_bytes_) on_bytes_(bytes_);
}

size_t ResponseCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t ResponseCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace tcm
