// SPDX-License-Identifier: Apache-2.0
#include "clients/cpp/spawned_daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "common/errno_text.h"
#include "common/unique_fd.h"
#include "clients/cpp/estimator_client.h"

extern char** environ;

namespace estimator::client {

namespace {

using Clock = std::chrono::steady_clock;

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string search_path(std::string_view name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  std::string_view rest(path);
  while (true) {
    const std::size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";  // POSIX: an empty PATH entry is the current directory
    std::string candidate = dir + "/" + std::string(name);
    if (is_executable_file(candidate)) return candidate;
    if (colon == std::string_view::npos) return {};
    rest.remove_prefix(colon + 1);
  }
}

// A path given by the user (option or $ESTIMATORD): checked now, so that a typo reads as
// "not found" rather than as a child that exits 127.
Result<std::string> check_given(std::string_view given, std::string_view where) {
  std::string path(given);
  if (path.find('/') == std::string::npos) {
    std::string found = search_path(path);
    if (found.empty()) {
      return Status(Code::kNotFound, "estimatord '" + path + "' (" + std::string(where) +
                                         ") is not on $PATH");
    }
    return found;
  }
  if (access(path.c_str(), F_OK) != 0) {
    return Status(Code::kNotFound,
                  "estimatord " + path + " (" + std::string(where) + "): " + errno_text(errno));
  }
  if (!is_executable_file(path)) {
    return Status(Code::kPermissionDenied, "estimatord " + path + " (" + std::string(where) +
                                               ") is not an executable file");
  }
  return path;
}

std::string private_name() {
  static std::atomic<unsigned> counter{0};
  // The random part keeps names apart across pid namespaces sharing one /dev/shm.
  static const unsigned salt = std::random_device{}() & 0xffffU;
  return "estimator-spawned-" + std::to_string(getpid()) + "-" + std::to_string(salt) + "-" +
         std::to_string(counter.fetch_add(1));
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigdescr_np(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "changed state " + std::to_string(status);
}

// Runs in the forked child: only async-signal-safe calls until execve.
[[noreturn]] void exec_child(const char* path, char* const* argv, int devnull, int err_fd,
                             pid_t parent) {
  int err = 0;
  // SIGTERM rather than SIGKILL: the daemon then removes its segment on the way out.
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) err = errno;
  // The exporter may have died before prctl took effect; nobody would ever stop us.
  if (err == 0 && getppid() != parent) _exit(127);
  if (err == 0) {
    // Ignored signals stay ignored across exec (Python ignores SIGPIPE; a shell may ignore
    // SIGTERM); the daemon needs default dispositions. nullptr is SIG_DFL.
    struct sigaction dfl {};
    dfl.sa_handler = nullptr;
    sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < NSIG; ++s) {
      if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, nullptr);  // some fail: fine
    }
    if (dup2(devnull, STDIN_FILENO) < 0) err = errno;
    // The exporter's stdout may carry its data; the daemon writes to stderr only, its
    // stdout included. Best effort: with stderr closed, stdout stays as it was.
    dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  if (err == 0) {
    // Descriptors the exporter opened without O_CLOEXEC must not live on in the daemon.
    const auto ef = static_cast<unsigned>(err_fd);
    bool closed = (ef <= 3 || close_range(3, ef - 1, 0) == 0) && close_range(ef + 1, ~0U, 0) == 0;
    if (!closed) {
      for (int fd = 3; fd < 4096; ++fd) {
        if (fd != err_fd) close(fd);
      }
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(path, argv, environ);
    err = errno;
  }
  [[maybe_unused]] const ssize_t n = write(err_fd, &err, sizeof err);
  _exit(127);
}

}  // namespace

// The thread that forks the daemon and lives until it is reaped: the kernel sends the
// death signal when the forking *thread* ends, not only when the process does.
struct SpawnedDaemon::Forker {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;     // fork and exec attempted; pid / error set
  bool release = false;  // the child is reaped: the thread may end
  pid_t pid = -1;
  int error = 0;
  std::string step;  // what failed
  std::thread thread;

  ~Forker() {
    {
      std::lock_guard lock(mu);
      release = true;
    }
    cv.notify_all();
    if (thread.joinable()) thread.join();
  }

  void run(const std::string& path, std::vector<char*> argv, int devnull) {
    int fds[2];
    pid_t child = -1;
    int err = 0;
    std::string what;
    if (pipe2(fds, O_CLOEXEC) != 0) {
      err = errno;
      what = "pipe2";
    } else {
      const pid_t parent = getpid();
      child = fork();
      if (child == 0) exec_child(path.c_str(), argv.data(), devnull, fds[1], parent);
      close(fds[1]);
      if (child < 0) {
        err = errno;
        what = "fork";
      } else {
        // EOF: execve succeeded (the pipe closed on exec). An int: the errno of the child.
        int child_err = 0;
        ssize_t n;
        do {
          n = read(fds[0], &child_err, sizeof child_err);
        } while (n < 0 && errno == EINTR);
        if (n == static_cast<ssize_t>(sizeof child_err)) {
          err = child_err;
          what = "exec " + path;
          int status = 0;
          while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
          }
          child = -1;
        }
      }
      close(fds[0]);
    }
    std::unique_lock lock(mu);
    pid = child;
    error = err;
    step = std::move(what);
    done = true;
    cv.notify_all();
    cv.wait(lock, [this] { return release; });
  }
};

Result<std::string> find_estimatord(std::string_view binary) {
  if (!binary.empty()) return check_given(binary, "given path");
  if (const char* env = std::getenv("ESTIMATORD"); env != nullptr && *env != '\0') {
    return check_given(env, "$ESTIMATORD");
  }
  std::string exe_dir;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    exe_dir.assign(buf, static_cast<std::size_t>(n));
    exe_dir.resize(exe_dir.rfind('/') == std::string::npos ? 0 : exe_dir.rfind('/'));
    if (std::string p = exe_dir + "/estimatord"; is_executable_file(p)) return p;
  }
  if (std::string p = search_path("estimatord"); !p.empty()) return p;
  return Status(Code::kNotFound,
                "estimatord not found: not given, $ESTIMATORD unset, not in " +
                    (exe_dir.empty() ? std::string("the executable's directory") : exe_dir) +
                    ", not on $PATH");
}

Result<std::unique_ptr<SpawnedDaemon>> SpawnedDaemon::start(SpawnOptions options) {
  auto binary = find_estimatord(options.binary);
  if (!binary.ok()) return binary.status();

  std::unique_ptr<SpawnedDaemon> d(new SpawnedDaemon);
  d->binary_ = std::move(binary).value();
  d->shm_name_ = options.shm_name.empty() ? private_name() : options.shm_name;
  d->stop_timeout_ = options.stop_timeout;

  std::vector<std::string> args = {d->binary_, "--shm-name", d->shm_name_, "--log-level",
                                    options.log_level};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;  // built before fork: the child may not allocate
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  UniqueFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devnull.get() < 0) return Status(Code::kInternal, "open /dev/null: " + errno_text(errno));

  // The forking thread starts with every signal blocked (so does the child until it has
  // reset the dispositions): no handler of the exporter runs in the forked copy.
  d->forker_ = std::make_unique<Forker>();
  Forker& f = *d->forker_;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    f.thread = std::thread([&f, path = d->binary_, argv, fd = devnull.get()] { f.run(path, argv, fd); });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return Status(Code::kResourceExhausted, std::string("cannot start a thread: ") + e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  {
    std::unique_lock lock(f.mu);
    f.cv.wait(lock, [&f] { return f.done; });
  }
  devnull.reset();
  if (f.pid <= 0) {
    const Code code = f.error == ENOENT   ? Code::kNotFound
                      : f.error == EACCES ? Code::kPermissionDenied
                      : f.error == EAGAIN ? Code::kResourceExhausted
                                          : Code::kInternal;
    return Status(code, "cannot start estimatord: " + f.step + ": " + errno_text(f.error));
  }
  d->pid_ = f.pid;

  // Ready = answers a ping. Watch the child meanwhile so that a daemon that refuses to
  // start (bad option, segment name taken) is reported at once, with its exit status.
  const auto deadline = Clock::now() + options.start_timeout;
  Client probe({.shm_name = d->shm_name_});
  Status last = Status(Code::kUnavailable, "no ping attempted");
  while (true) {
    int status = 0;
    const pid_t w = waitpid(d->pid_, &status, WNOHANG);
    if (w == d->pid_) {
      d->pid_ = -1;
      d->stopped_ = status;
      return Status(Code::kUnavailable, "estimatord (" + d->binary_ + ") " + describe_exit(status) +
                                            " before answering; its log is on stderr");
    }
    const auto now = Clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    last = probe.ping(std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(200)));
    if (last.ok()) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const pid_t pid = d->pid_;
  (void)d->stop();
  return Status(Code::kDeadlineExceeded,
                "estimatord (" + d->binary_ + ", pid " + std::to_string(pid) +
                    ") did not answer within " + std::to_string(options.start_timeout.count()) +
                    " ms (last ping: " + last.to_string() + "); stopped it");
}

SpawnedDaemon::~SpawnedDaemon() { (void)stop(); }

Result<int> SpawnedDaemon::stop() {
  if (pid_ <= 0) {
    forker_.reset();
    return stopped_;
  }
  const pid_t pid = std::exchange(pid_, -1);
  kill(pid, SIGTERM);
  const auto deadline = Clock::now() + stop_timeout_;
  int status = 0;
  bool reaped = false;
  int wait_err = 0;
  while (true) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      reaped = true;
      break;
    }
    if (w < 0 && errno != EINTR) {
      wait_err = errno;
      break;
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!reaped && wait_err == 0) {
    kill(pid, SIGKILL);
    pid_t w;
    do {
      w = waitpid(pid, &status, 0);
    } while (w < 0 && errno == EINTR);
    if (w == pid) {
      reaped = true;
    } else {
      wait_err = errno;
    }
  }
  forker_.reset();  // only now: the forking thread's end would signal a live child
  if (!reaped) {
    stopped_ = Status(Code::kInternal, "estimatord pid " + std::to_string(pid) +
                                           " was reaped by someone else (waitpid: " +
                                           errno_text(wait_err) + ")");
    return stopped_;
  }
  if (WIFSIGNALED(status)) {
    // A killed daemon could not remove its segment and lock file; the name was private.
    const std::string shm_path = "/" + shm_name_;
    shm_unlink(shm_path.c_str());
    unlink(("/dev/shm/" + shm_name_ + ".lock").c_str());
  }
  stopped_ = status;
  return stopped_;
}

}  // namespace estimator::client
