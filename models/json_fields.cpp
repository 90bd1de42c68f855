// SPDX-License-Identifier: Apache-2.0
#include "models/json_fields.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <utility>

namespace estimator::models::json {

Where Where::operator/(std::string_view key) const {
  Where w{file, path};
  if (!w.path.empty() && !key.starts_with('[')) w.path += '.';
  w.path += key;
  return w;
}

std::string Where::describe() const {
  if (path.empty()) return file;
  return file + ": " + path;
}

Status invalid(const Where& where, std::string_view problem) {
  std::string msg = where.describe();
  msg += ": ";
  msg += problem;
  return Status(Code::kInvalidArgument, std::move(msg));
}

namespace {

// The value types nlohmann's SAX interface passes to a handler (the three below).
struct SaxTypes {
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;
};

// Replays a document that failed to parse, without building it, to learn which field the
// parser was reading when it stopped: nlohmann's own message gives only a position.
class PathTracker : public SaxTypes {
 public:
  bool null() { return value(); }
  bool boolean(bool /*unused*/) { return value(); }
  bool number_integer(number_integer_t /*unused*/) { return value(); }
  bool number_unsigned(number_unsigned_t /*unused*/) { return value(); }
  bool number_float(number_float_t /*unused*/, const string_t& /*unused*/) { return value(); }
  bool string(string_t& /*unused*/) { return value(); }
  bool binary(binary_t& /*unused*/) { return value(); }
  bool start_object(std::size_t /*unused*/) {
    stack_.push_back(Level{true, {}, 0});
    return true;
  }
  bool key(string_t& k) {
    stack_.back().key = k;
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*unused*/) {
    stack_.push_back(Level{false, {}, 0});
    return true;
  }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*unused*/, const std::string& /*unused*/,
                   const Json::exception& ex) {
    message_ = ex.what();
    return false;
  }

  std::string path() const {
    std::string p;
    for (const Level& l : stack_) {
      if (l.is_object) {
        if (l.key.empty()) continue;
        if (!p.empty()) p += '.';
        p += l.key;
      } else {
        p += '[' + std::to_string(l.index) + ']';
      }
    }
    return p;
  }
  const std::string& message() const { return message_; }

 private:
  struct Level {
    bool is_object;
    std::string key;
    std::size_t index;
  };

  // A finished value moves the position past it: the next error is in the enclosing
  // object (before its next key) or at the next array index.
  bool value() {
    if (stack_.empty()) return true;
    if (stack_.back().is_object) {
      stack_.back().key.clear();
    } else {
      ++stack_.back().index;
    }
    return true;
  }
  bool close() {
    stack_.pop_back();
    return value();
  }

  std::vector<Level> stack_;
  std::string message_;
};

// What a value costs in the DOM, estimated from the types' sizes (not a count of what
// malloc hands out: it only has to grow with the document).
constexpr std::size_t kValueCost = sizeof(Json);
constexpr std::size_t kContainerCost = sizeof(Json) + sizeof(Json::array_t);
// An object member is a (key, value) pair; the value's own cost is counted with it.
constexpr std::size_t kMemberCost = sizeof(std::pair<const Json::string_t, Json>) - sizeof(Json);
// A string past the small-string buffer owns a heap block; a string value is itself a heap
// object in the DOM, a key is not.
constexpr std::size_t string_bytes(std::size_t n) { return n > 15 ? n + 1 : 0; }

// The first pass: walks the document without building it, refusing it (returning false,
// which ends the parse) at the first container nested deeper than kMaxDepth or once the
// DOM it would build costs more than the budget, and records each container's element
// count so that the second pass can reserve exactly (a growing vector would hold up to
// three times its elements while it reallocates).
class SizePass : public SaxTypes {
 public:
  explicit SizePass(std::size_t budget) : budget_(budget) {}

  bool null() { return value(kValueCost); }
  bool boolean(bool /*unused*/) { return value(kValueCost); }
  bool number_integer(number_integer_t /*unused*/) { return value(kValueCost); }
  bool number_unsigned(number_unsigned_t /*unused*/) { return value(kValueCost); }
  bool number_float(number_float_t /*unused*/, const string_t& /*unused*/) {
    return value(kValueCost);
  }
  bool string(string_t& v) {
    return value(kValueCost + sizeof(string_t) + string_bytes(v.size()));
  }
  bool binary(binary_t& v) { return value(kValueCost + sizeof(binary_t) + v.size()); }
  bool key(string_t& k) { return charge(kMemberCost + string_bytes(k.size())); }
  bool start_object(std::size_t /*unused*/) { return open(); }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*unused*/) { return open(); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*unused*/, const std::string& /*unused*/,
                   const Json::exception& /*unused*/) {
    syntax_error_ = true;
    return false;
  }

  // Element counts of every container, in the order they open.
  std::vector<std::uint32_t>& sizes() { return sizes_; }
  // Why the walk stopped early; empty after a syntax error (reported by PathTracker).
  const std::string& limit_error() const { return limit_error_; }
  bool syntax_error() const { return syntax_error_; }

 private:
  bool value(std::size_t cost) {
    if (!open_.empty()) ++sizes_[open_.back()];
    return charge(cost);
  }
  bool open() {
    if (open_.size() >= kMaxDepth) {
      limit_error_ = "nests deeper than " + std::to_string(kMaxDepth) + " levels";
      return false;
    }
    if (!value(kContainerCost)) return false;
    open_.push_back(sizes_.size());
    sizes_.push_back(0);
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }
  bool charge(std::size_t cost) {
    cost_ += cost;
    if (cost_ <= budget_) return true;
    limit_error_ = "its parsed form would take more than " + std::to_string(budget_ >> 20) +
                   " MiB (" + std::to_string(kMaxDomBytesPerTextByte) +
                   " times the document's size, plus " +
                   std::to_string(kMinDomBudgetBytes >> 20) +
                   " MiB): too many values for its size";
    return false;
  }

  std::size_t budget_;
  std::size_t cost_ = 0;
  std::vector<std::uint32_t> sizes_;
  std::vector<std::size_t> open_;  // indices into sizes_ of the containers still open
  std::string limit_error_;
  bool syntax_error_ = false;
};

// ordered_map finds a key by comparing it with every key before it, so building an object
// of n members with its emplace costs n^2/2 comparisons: minutes for a few MB of
// {"k1":0,"k2":0,...}. Objects of at least this many members (counted by the first pass)
// are built by appending every member and settling repeated keys once, when the object
// closes, by sorting: n log n. Smaller ones, nearly all of a real model's, keep emplace.
constexpr std::size_t kLargeObject = 32;

// The second pass, over a document SizePass accepted: builds it as Json::parse would,
// each container reserved at its final size.
class BuildPass : public SaxTypes {
 public:
  BuildPass(Json& root, const std::vector<std::uint32_t>& sizes) : root_(root), sizes_(sizes) {}

  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(number_integer_t v) { return put(v); }
  bool number_unsigned(number_unsigned_t v) { return put(v); }
  bool number_float(number_float_t v, const string_t& /*unused*/) { return put(v); }
  bool string(string_t& v) { return put(std::move(v)); }
  bool binary(binary_t& v) { return put(Json::binary(std::move(v))); }
  bool key(string_t& k) {
    // As Json::parse: a repeated key keeps its first place and its last value wins
    // (settle_repeats() for a large object).
    const Open& top = stack_.back();
    auto& members = top.value->get_ref<Json::object_t&>();
    if (top.large) {
      static_cast<Json::object_t::Container&>(members).emplace_back(std::move(k), nullptr);
      member_ = &members.back().second;
    } else {
      member_ = &members.emplace(std::move(k), nullptr).first->second;
    }
    return true;
  }
  bool start_object(std::size_t /*unused*/) {
    const std::uint32_t size = sizes_[next_size_++];
    Json* obj = place(Json::object());
    obj->get_ref<Json::object_t&>().reserve(size);
    stack_.push_back(Open{obj, size >= kLargeObject});
    return true;
  }
  bool start_array(std::size_t /*unused*/) {
    Json* arr = place(Json::array());
    arr->get_ref<Json::array_t&>().reserve(sizes_[next_size_++]);
    stack_.push_back(Open{arr, false});
    return true;
  }
  bool end_object() {
    if (stack_.back().large) settle_repeats(stack_.back().value->get_ref<Json::object_t&>());
    return close();
  }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*unused*/, const std::string& /*unused*/,
                   const Json::exception& /*unused*/) {
    return false;
  }

 private:
  // An open container. Containers are reserved, so the pointers here and in member_ stay
  // valid while their children are added.
  struct Open {
    Json* value;
    bool large;  // an object of at least kLargeObject members, appended to
  };

  // A large object, complete, with every member appended: a repeated key's members are
  // merged into its first one, which takes the last one's value. Members with the same key
  // sort together, in the order they came (a stable sort), so the first and last of each
  // run are the ones to keep. Rare (repeats are not meant to be there), so the object is
  // only rebuilt when one is found.
  static void settle_repeats(Json::object_t& object) {
    auto& members = static_cast<Json::object_t::Container&>(object);
    std::vector<std::uint32_t> order(members.size());
    for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return members[a].first < members[b].first;
    });
    std::vector<bool> drop(members.size(), false);
    bool any = false;
    for (std::size_t run = 0, end = 0; run < order.size(); run = end) {
      end = run + 1;
      while (end < order.size() && members[order[end]].first == members[order[run]].first) {
        drop[order[end++]] = true;
      }
      if (end - run == 1) continue;
      members[order[run]].second = std::move(members[order[end - 1]].second);
      any = true;
    }
    if (!any) return;
    // Its keys are const: the kept members are moved into a new vector.
    Json::object_t::Container kept;
    kept.reserve(members.size());
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (!drop[i]) kept.emplace_back(members[i].first, std::move(members[i].second));
    }
    members.swap(kept);
  }

  template <typename V>
  Json* place(V&& v) {
    if (stack_.empty()) {
      root_ = Json(std::forward<V>(v));
      return &root_;
    }
    Json& top = *stack_.back().value;
    if (top.is_array()) {
      auto& elements = top.get_ref<Json::array_t&>();
      elements.emplace_back(std::forward<V>(v));
      return &elements.back();
    }
    *member_ = Json(std::forward<V>(v));
    return member_;
  }
  template <typename V>
  bool put(V&& v) {
    place(std::forward<V>(v));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  Json& root_;
  const std::vector<std::uint32_t>& sizes_;
  std::size_t next_size_ = 0;
  std::vector<Open> stack_;
  Json* member_ = nullptr;
};

// nlohmann prefixes its messages with "[json.exception.parse_error.101] "; the id means
// nothing to a user.
std::string strip_exception_id(const std::string& what) {
  if (!what.empty() && what.front() == '[') {
    const std::size_t end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

}  // namespace

Result<Json> parse(std::string_view text, std::string_view file) {
  // Two passes: the document is refused before anything is built, and what is built is
  // exactly its size.
  try {
    SizePass sizes(kMaxDomBytesPerTextByte * text.size() + kMinDomBudgetBytes);
    if (Json::sax_parse(text, &sizes, Json::input_format_t::json, /*strict=*/true)) {
      Json doc;
      BuildPass build(doc, sizes.sizes());
      Json::sax_parse(text, &build, Json::input_format_t::json, /*strict=*/true);
      return doc;
    }
    if (!sizes.syntax_error()) {
      return Status(Code::kTooLarge, std::string(file) + ": refused: " + sizes.limit_error());
    }
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted,
                  std::string(file) + ": out of memory parsing " + std::to_string(text.size()) +
                      " bytes of JSON");
  }

  PathTracker tracker;
  Json::sax_parse(text, &tracker, Json::input_format_t::json, /*strict=*/true);
  std::string msg(file);
  msg += ": not valid JSON";
  const std::string path = tracker.path();
  if (!path.empty()) msg += " (in " + path + ")";
  msg += ": ";
  msg += tracker.message().empty() ? std::string("parse error")
                                   : strip_exception_id(tracker.message());
  return Status(Code::kInvalidArgument, std::move(msg));
}

Status expect_object(const Json& value, const Where& where) {
  if (value.is_object()) return Status::Ok();
  return invalid(where, std::string("expected an object, got ") + value.type_name());
}

Result<const Json*> member(const Json& obj, const Where& where, std::string_view key) {
  if (Status s = expect_object(obj, where); !s.ok()) return s;
  const auto it = obj.find(key);
  if (it == obj.end()) return invalid(where / key, "missing");
  return &*it;
}

const Json* optional_member(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<double> finite_number(const Json& value, const Where& where) {
  if (!value.is_number()) {
    return invalid(where, std::string("expected a finite number, got ") + value.type_name());
  }
  const double d = value.get<double>();
  if (!std::isfinite(d)) {
    return Status(Code::kInvalidValue, where.describe() + ": not a finite number");
  }
  return d;
}

Result<std::string> string_value(const Json& value, const Where& where) {
  if (!value.is_string()) {
    return invalid(where, std::string("expected a string, got ") + value.type_name());
  }
  return value.get<std::string>();
}

Result<std::vector<std::string>> string_array(const Json& value, const Where& where) {
  if (!value.is_array()) {
    return invalid(where, std::string("expected an array of strings, got ") +
                              value.type_name());
  }
  std::vector<std::string> out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      return invalid(where / ("[" + std::to_string(i) + "]"),
                     std::string("expected a string, got ") + value[i].type_name());
    }
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

}  // namespace estimator::models::json
