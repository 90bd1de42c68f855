// SPDX-License-Identifier: Apache-2.0
#include "service/model_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <spdlog/spdlog.h>

namespace estimator::service {
namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE |
                                     IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF |
                                     IN_MOVE_SELF;

// What a directory looks like, cheaply: every path with its size and mtime. Two equal
// fingerprints mean nothing worth rescanning changed.
std::string fingerprint(const fs::path& dir) {
  std::string fp;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code sec;
    fp += it->path().string();
    if (it->is_regular_file(sec)) {
      fp += ':' + std::to_string(it->file_size(sec)) + ':' +
            std::to_string(it->last_write_time(sec).time_since_epoch().count());
    }
    fp += '\n';
  }
  return fp;
}

// Watches dir and every directory below it; false when inotify cannot cover the tree.
bool add_watches(int fd, const fs::path& dir) {
  if (inotify_add_watch(fd, dir.c_str(), kWatchMask) < 0) return false;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code sec;
    if (it->is_directory(sec) && !it->is_symlink(sec) &&
        inotify_add_watch(fd, it->path().c_str(), kWatchMask) < 0) {
      return false;
    }
  }
  return !ec;
}

}  // namespace

std::shared_ptr<const models::Registry> ModelLoader::load() {
  std::vector<models::Refusal> refused;
  std::vector<models::ModelFolder> folders = extra_;
  auto scanned = models::Registry::scan_directory(dir_, refused);
  if (scanned.ok()) {
    for (auto& f : *scanned) folders.push_back(std::move(f));
  } else {
    refused.push_back({dir_.string(), scanned.status()});
  }
  auto registry = models::Registry::build(folders, refused);
  // A folder that fails now but loaded before serves its last good version; the failure
  // stays listed among the refusals so that operators see it.
  bool substituted = false;
  for (const models::Refusal& r : registry->refused()) {
    // A refusal means the file is there but fails (a removed file is simply absent).
    auto good = last_good_.find(r.origin);
    if (good == last_good_.end()) continue;
    auto same = std::find_if(folders.begin(), folders.end(),
                             [&](const models::ModelFolder& f) { return f.origin == r.origin; });
    if (same != folders.end()) {
      *same = good->second;
    } else {
      folders.push_back(good->second);  // refused while scanning (an unreadable zip)
    }
    std::erase_if(refused, [&](const models::Refusal& e) { return e.origin == r.origin; });
    refused.push_back({r.origin, Status(r.reason.code(), r.reason.message() +
                                                          " (the last good version keeps serving)")});
    substituted = true;
  }
  if (substituted) registry = models::Registry::build(folders, refused);

  std::map<std::string, models::ModelFolder> good;
  for (const auto& m : registry->models()) {
    for (auto& f : folders) {
      if (f.origin == m->info().origin) good.emplace(f.origin, f);
    }
  }
  last_good_ = std::move(good);
  return registry;
}

ModelWatcher::ModelWatcher(ModelLoader loader, RegistryHolder& holder, WatchOptions options)
    : loader_(std::move(loader)), holder_(holder), options_(options) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // Watch first, then load: a change made while the watcher starts is either in this
  // load or seen by the watch, never lost between the two.
  const fs::path& dir = loader_.dir();
  inotify_fd_ = options_.force_polling ? -1 : inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ >= 0 && !add_watches(inotify_fd_, dir)) {
    spdlog::warn("inotify cannot watch {} (limit of watches?); polling every {} ms instead",
                 dir.string(), options_.poll_interval.count());
    close(inotify_fd_);
    inotify_fd_ = -1;
  }
  using_inotify_ = inotify_fd_ >= 0;
  if (!using_inotify_) last_fingerprint_ = fingerprint(dir);
  reload();
  thread_ = std::thread([this] { run(); });
}

ModelWatcher::~ModelWatcher() {
  stop_ = true;
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (inotify_fd_ >= 0) close(inotify_fd_);
}

void ModelWatcher::request_reload() {
  reload_requested_ = true;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof one);
}

void ModelWatcher::reload() {
  auto registry = loader_.load();
  spdlog::info("model directory {} reloaded: {} models, {} refused", loader_.dir().string(),
               registry->models().size(), registry->refused().size());
  holder_.set(std::move(registry));
  reloads_.fetch_add(1);
}

void ModelWatcher::run() {
  const fs::path& dir = loader_.dir();
  const int fd = inotify_fd_;
  bool dirty = false;
  char events[16 * 1024];
  while (!stop_) {
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {fd, POLLIN, 0}};
    const auto timeout = dirty ? options_.settle : options_.poll_interval;
    const int n = poll(fds, fd >= 0 ? 2 : 1, static_cast<int>(timeout.count()));
    if (stop_) break;
    if (n > 0 && (fds[0].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t r = read(wake_fd_, &count, sizeof count);
    }
    if (reload_requested_.exchange(false)) {
      // As after a settled change: watch what appeared, then rescan at once.
      if (fd >= 0) {
        if (!add_watches(fd, dir)) spdlog::warn("inotify: some directories of {} are not watched", dir.string());
        dirty = false;
      } else {
        last_fingerprint_ = fingerprint(dir);
      }
      reload();
      continue;
    }
    if (fd >= 0) {
      if (n > 0 && (fds[1].revents & POLLIN) != 0) {
        // Any event (an IN_Q_OVERFLOW included) just means "rescan once it settles".
        while (read(fd, events, sizeof events) > 0) {
        }
        dirty = true;
        continue;  // wait for quiet
      }
      if (n == 0 && dirty) {
        // New subdirectories need watches of their own; re-adding existing ones is harmless.
        if (!add_watches(fd, dir)) spdlog::warn("inotify: some directories of {} are not watched", dir.string());
        dirty = false;
        reload();
      }
    } else if (n == 0) {
      std::string fp = fingerprint(dir);
      if (fp != last_fingerprint_) {
        last_fingerprint_ = std::move(fp);
        reload();
      }
    }
  }
}

}  // namespace estimator::service
