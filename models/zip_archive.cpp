// SPDX-License-Identifier: Apache-2.0
#include "models/zip_archive.h"

#include <zip.h>

#include <memory>

namespace estimator::models {
namespace {

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct FileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

Status bad(std::string_view origin, const std::string& what) {
  return Status(Code::kInvalidArgument, std::string(origin) + ": " + what);
}

bool unsafe_name(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.front() == '\\') return true;
  if (name.size() > 1 && name[1] == ':') return true;  // C:\...
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = name.size();
    if (name.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return name.find('\0') != std::string_view::npos;
}

}  // namespace

Result<std::map<std::string, std::string>> read_zip(std::string_view bytes, std::string_view origin,
                                                    const ZipLimits& limits) {
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &err);
  if (src == nullptr) {
    const std::string msg = zip_error_strerror(&err);
    zip_error_fini(&err);
    return bad(origin, "cannot read zip: " + msg);
  }
  std::unique_ptr<zip_t, ZipCloser> zip(zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err));
  if (!zip) {
    zip_source_free(src);
    const std::string msg = zip_error_strerror(&err);
    zip_error_fini(&err);
    return bad(origin, "not a valid zip archive: " + msg);
  }
  zip_error_fini(&err);

  const zip_int64_t n = zip_get_num_entries(zip.get(), 0);
  if (n == 0) return bad(origin, "empty archive");
  if (n < 0 || static_cast<std::size_t>(n) > limits.max_entries) {
    return bad(origin, "too many entries (" + std::to_string(n) + ")");
  }
  std::map<std::string, std::string> out;
  std::size_t total = 0;
  for (zip_uint64_t i = 0; i < static_cast<zip_uint64_t>(n); ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(zip.get(), i, 0, &st) != 0 || (st.valid & ZIP_STAT_NAME) == 0) {
      return bad(origin, "unreadable entry " + std::to_string(i));
    }
    const std::string name = st.name;
    if (unsafe_name(name)) return bad(origin, "entry '" + name + "' has an absolute or '..' path");
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (zip_file_get_external_attributes(zip.get(), i, 0, &opsys, &attributes) == 0 &&
        opsys == ZIP_OPSYS_UNIX && ((attributes >> 16) & 0170000) == 0120000) {
      return bad(origin, "entry '" + name + "' is a symbolic link");
    }
    if (name.back() == '/') continue;  // directory
    if (out.contains(name)) return bad(origin, "entry '" + name + "' appears twice");

    std::unique_ptr<zip_file_t, FileCloser> f(zip_fopen_index(zip.get(), i, 0));
    if (!f) {
      return bad(origin, "cannot open entry '" + name + "': " + zip_strerror(zip.get()));
    }
    // Read up to the cap plus one byte: the header's size may lie.
    std::string data;
    char buf[65536];
    for (;;) {
      const zip_int64_t got = zip_fread(f.get(), buf, sizeof buf);
      if (got < 0) return bad(origin, "entry '" + name + "' is corrupt: " + zip_file_strerror(f.get()));
      if (got == 0) break;
      data.append(buf, static_cast<std::size_t>(got));
      if (data.size() > limits.max_entry_bytes || total + data.size() > limits.max_total_bytes) {
        return bad(origin, "entry '" + name + "' exceeds the size limit");
      }
    }
    if ((st.valid & ZIP_STAT_SIZE) != 0 && st.size != data.size()) {
      return bad(origin, "entry '" + name + "' is truncated");
    }
    total += data.size();
    out.emplace(name, std::move(data));
  }
  return out;
}

}  // namespace estimator::models
