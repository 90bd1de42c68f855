// SPDX-License-Identifier: Apache-2.0
// Hot reload of the model directory: new, changed and removed models take effect without
// a restart. A background thread watches the directory (inotify, recursively; a polling
// fingerprint where inotify is unavailable or runs out of watches), rescans it after
// changes settle, and swaps a whole new registry in (RegistryHolder::set): requests in
// flight finish on the registry they started with.
//
// A model whose files become unloadable keeps serving its last good version: the watcher
// remembers the last folder contents that loaded for each origin and substitutes them for
// a folder that now fails. A model whose files are removed is dropped.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "models/registry.h"
#include "service/request_handler.h"

namespace estimator::service {

struct WatchOptions {
  std::chrono::milliseconds settle{200};         // quiet time after the last change
  std::chrono::milliseconds poll_interval{2000}; // fingerprint period without inotify
  bool force_polling = false;                    // tests: exercise the fallback
};

// Loads the directory (plus `extra` folders, e.g. the embedded defaults, which never
// change) into a registry, keeping the last good version of models that break.
class ModelLoader {
 public:
  ModelLoader(std::filesystem::path dir, std::vector<models::ModelFolder> extra)
      : dir_(std::move(dir)), extra_(std::move(extra)) {}
  // Scans and builds; returns the new registry (never null: a failed scan keeps extras).
  std::shared_ptr<const models::Registry> load();
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<models::ModelFolder> extra_;
  std::map<std::string, models::ModelFolder> last_good_;  // origin -> folder that loaded
};

class ModelWatcher {
 public:
  // Starts watching, loads the directory once into `holder` (synchronously), then reloads
  // in the background whenever it changes.
  ModelWatcher(ModelLoader loader, RegistryHolder& holder, WatchOptions options = {});
  ~ModelWatcher();  // stops and joins the thread
  ModelWatcher(const ModelWatcher&) = delete;
  ModelWatcher& operator=(const ModelWatcher&) = delete;

  // Rescans the directory now, from the watcher's thread (estimatord's SIGHUP): for what the
  // watch cannot see, or to reload without waiting. Returns at once.
  void request_reload();

  // Number of registries swapped in since start (tests and logs).
  std::uint64_t reloads() const { return reloads_.load(); }
  bool using_inotify() const { return using_inotify_.load(); }

 private:
  void run();
  void reload();

  ModelLoader loader_;
  RegistryHolder& holder_;
  WatchOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_requested_{false};
  std::atomic<std::uint64_t> reloads_{0};
  std::atomic<bool> using_inotify_{false};
  int wake_fd_ = -1;     // eventfd that interrupts the wait on shutdown and reload requests
  int inotify_fd_ = -1;  // -1: polling
  std::string last_fingerprint_;
  std::thread thread_;
};

}  // namespace estimator::service
