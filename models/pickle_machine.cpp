// SPDX-License-Identifier: Apache-2.0
// The opcode machine of the restricted pickle reader (models/pickle.h): the stack, the
// memo, MARKs, the allow list of names and the memory budget. What the values mean is
// models/pickle_value.h; numpy's dtypes and arrays are built by models/pickle_numpy.h.
#include "models/pickle.h"
#include "models/pickle_numpy.h"
#include "models/shape_text.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <new>
#include <unordered_map>

namespace estimator::models::pickle {

namespace {

// Opcodes (CPython Lib/pickletools.py documents each). Only the binary ones joblib and
// numpy produce, plus the few text ones that are trivial to read safely.
enum Op : std::uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinFloat = 'G',
  kBinUnicode = 'X',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kAppend = 'a',
  kAppends = 'e',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kGet = 'g',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kReduce = 'R',
  kSetItem = 's',
  kSetItems = 'u',
  kTuple = 't',
  kEmptyTuple = ')',
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  kByteArray8 = 0x96,
};

constexpr std::size_t kMaxGlobalLine = 256;  // module or name of GLOBAL

// Names with a meaning to the reader. Everything else that is allowed is inert.
enum class Special {
  kNone,
  kReconstruct,    // numpy.core.multiarray._reconstruct(ndarray, (0,), b"b") + BUILD
  kScalar,         // numpy.core.multiarray.scalar(dtype, bytes)
  kDtype,          // numpy.dtype("f8", align, copy) + BUILD
  kFromBuffer,     // numpy.core.numeric._frombuffer(bytes, dtype, shape, order)
  kNdarray,        // numpy.ndarray: only as _reconstruct's / the wrapper's subtype
  kCodecsEncode,   // _codecs.encode(str, "latin1"): how protocol 2 writes bytes
  kBytes,          // builtins.bytes(): protocol 2's empty bytes
  kByteArray,      // builtins.bytearray(bytes): how protocols 2-4 write a bytearray
  kReconstructor,  // copyreg._reconstructor(cls, base, state)
  kObject,         // builtins.object
  kOrderedDict,    // collections.OrderedDict(): a dict (XGBRegressor's evals_result_)
  kArrayWrapper,   // joblib.numpy_pickle.NumpyArrayWrapper
};

struct Builtin {
  std::string_view module;
  std::string_view name;
  Special special;
};

constexpr Builtin kBuiltins[] = {
    {"numpy.core.multiarray", "_reconstruct", Special::kReconstruct},
    {"numpy._core.multiarray", "_reconstruct", Special::kReconstruct},
    {"numpy.core.multiarray", "scalar", Special::kScalar},
    {"numpy._core.multiarray", "scalar", Special::kScalar},
    {"numpy.core.numeric", "_frombuffer", Special::kFromBuffer},
    {"numpy._core.numeric", "_frombuffer", Special::kFromBuffer},
    {"numpy", "dtype", Special::kDtype},
    {"numpy", "ndarray", Special::kNdarray},
    {"_codecs", "encode", Special::kCodecsEncode},
    {"builtins", "bytes", Special::kBytes},
    {"builtins", "bytearray", Special::kByteArray},
    {"builtins", "object", Special::kObject},
    {"collections", "OrderedDict", Special::kOrderedDict},
    {"copyreg", "_reconstructor", Special::kReconstructor},
    {"joblib.numpy_pickle", "NumpyArrayWrapper", Special::kArrayWrapper},
};

Special special_of(std::string_view module, std::string_view name) {
  for (const Builtin& b : kBuiltins) {
    if (b.module == module && b.name == name) return b.special;
  }
  return Special::kNone;
}

bool is_ndarray(const Global& g) { return special_of(g.module, g.name) == Special::kNdarray; }

struct ParseError {
  Code code;
  std::string message;
};

std::string hex_byte(std::uint8_t b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  s += kDigits[b >> 4];
  s += kDigits[b & 15];
  return s;
}

// Decodes UTF-8 into code points; false on malformed input.
bool utf8_to_latin1(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < in.size()) {
      const auto c1 = static_cast<unsigned char>(in[i + 1]);
      if ((c1 & 0xC0) != 0x80) return false;
      const unsigned cp = ((c & 0x1Fu) << 6) | (c1 & 0x3Fu);
      if (cp < 0x80 || cp > 0xFF) return false;  // overlong, or not latin-1
      out.push_back(static_cast<char>(cp));
      i += 2;
    } else {
      return false;  // 3- and 4-byte sequences are beyond latin-1
    }
  }
  return true;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    if (c < 0x80) {
      n = 1;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
    } else {
      return false;
    }
    if (n > s.size() - i) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The VM.

class Reader {
 public:
  Reader(std::string_view in, const Options& options, Document& doc)
      : in_(in), options_(options), doc_(doc) {
    // Saturating: file size * factor + floor.
    const std::size_t factor = std::max<std::size_t>(options.limits.memory_factor, 1);
    const std::size_t cap = std::numeric_limits<std::size_t>::max() - options.limits.memory_floor;
    budget_ = in.size() > cap / factor ? std::numeric_limits<std::size_t>::max()
                                       : in.size() * factor + options.limits.memory_floor;
  }

  void read_all() {
    check_container();
    doc_.root_ = run(/*nested=*/false);
  }

 private:
  // One pickle's machine state; a nested pickle (object arrays) gets its own.
  struct Machine {
    std::vector<Value*> stack;
    std::vector<std::size_t> marks;
    std::unordered_map<std::uint64_t, Value*> memo;
    int proto = 0;
    bool nested = false;
  };

  [[noreturn]] void fail(std::size_t at, std::string message,
                         Code code = Code::kInvalidArgument) const {
    throw ParseError{code, "offset " + std::to_string(at) + ": " + std::move(message)};
  }

  [[noreturn]] void fail(std::size_t at, const Status& s) const { fail(at, s.message(), s.code()); }

  void check_container() const {
    if (in_.empty()) fail(0, "empty file");
    const auto b0 = static_cast<unsigned char>(in_[0]);
    const auto starts = [&](std::string_view magic) {
      return in_.substr(0, magic.size()) == magic;
    };
    if (starts("\x1f\x8b"))
      fail(0, "gzip-compressed joblib file: not supported (save with compress=0)");
    if (starts("BZh")) fail(0, "bz2-compressed joblib file: not supported (save with compress=0)");
    if (starts("\xfd"
               "7zXZ"))
      fail(0, "xz-compressed joblib file: not supported (save with compress=0)");
    if (starts("\x04\x22\x4d\x18"))
      fail(0, "lz4-compressed joblib file: not supported (save with compress=0)");
    if (starts("ZF")) fail(0, "old zlib joblib file (ZF header): not supported");
    if (b0 == 0x78) fail(0, "zlib-compressed joblib file: not supported (save with compress=0)");
    if (b0 != kProto) {
      fail(0, "not a pickle of protocol 2 or later (first byte " + hex_byte(b0) +
                  ", expected PROTO 0x80)");
    }
  }

  // ---- budget and value construction
  void charge(std::size_t bytes) {
    doc_.memory_ += bytes;
    if (doc_.memory_ > budget_) {
      fail(pos_,
           "the pickle needs more than " + std::to_string(budget_) +
               " bytes of memory (limit for a file of " + std::to_string(in_.size()) + " bytes)",
           Code::kTooLarge);
    }
  }

  Value* make(Value::Data d, std::size_t payload, std::size_t at) {
    charge(sizeof(Value) + payload);
    doc_.arena_.emplace_back(std::move(d), at);
    return &doc_.arena_.back();
  }

  // ---- input
  std::size_t left() const { return in_.size() - pos_; }

  std::string_view take(std::size_t n, const char* what) {
    if (n > left()) {
      fail(pos_, std::string("truncated file: ") + what + " needs " + std::to_string(n) +
                     " bytes, " + std::to_string(left()) + " left");
    }
    const std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  std::uint64_t uint_le(std::size_t n, const char* what) {
    const std::string_view s = take(n, what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) {
      v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
    }
    return v;
  }

  std::size_t length(std::size_t n, const char* what) {
    const std::size_t at = pos_;
    const std::uint64_t len = uint_le(n, what);
    if (len > left()) {
      fail(at, std::string("truncated file: ") + what + " of " + std::to_string(len) + " bytes, " +
                   std::to_string(left()) + " left");
    }
    return static_cast<std::size_t>(len);
  }

  std::string_view line(const char* what) {
    const std::size_t at = pos_;
    const std::size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos)
      fail(at, std::string("truncated file: ") + what + " has no end of line");
    if (end - pos_ > kMaxGlobalLine) fail(at, std::string(what) + " is too long");
    const std::string_view s = in_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  // ---- stack
  void push(Machine& m, Value* v) {
    if (m.stack.size() >= options_.limits.max_stack) {
      fail(pos_, "value stack deeper than " + std::to_string(options_.limits.max_stack),
           Code::kTooLarge);
    }
    m.stack.push_back(v);
  }

  Value* pop(Machine& m, std::size_t at) {
    if (m.stack.empty() || (!m.marks.empty() && m.stack.size() <= m.marks.back())) {
      fail(at, "stack underflow");
    }
    Value* v = m.stack.back();
    m.stack.pop_back();
    return v;
  }

  Value* top(Machine& m, std::size_t at) {
    if (m.stack.empty() || (!m.marks.empty() && m.stack.size() <= m.marks.back())) {
      fail(at, "stack underflow");
    }
    return m.stack.back();
  }

  // The values pushed since the last MARK, removed from the stack.
  std::vector<Value*> pop_mark(Machine& m, std::size_t at) {
    if (m.marks.empty()) fail(at, "no MARK on the stack");
    const std::size_t mark = m.marks.back();
    m.marks.pop_back();
    std::vector<Value*> items(m.stack.begin() + static_cast<std::ptrdiff_t>(mark), m.stack.end());
    m.stack.resize(mark);
    return items;
  }

  void memo_put(Machine& m, std::uint64_t index, std::size_t at) {
    Value* v = top(m, at);
    if (m.memo.size() >= options_.limits.max_memo && m.memo.find(index) == m.memo.end()) {
      fail(at, "memo larger than " + std::to_string(options_.limits.max_memo) + " entries",
           Code::kTooLarge);
    }
    charge(32);
    m.memo[index] = v;
  }

  Value* memo_get(Machine& m, std::uint64_t index, std::size_t at) {
    const auto it = m.memo.find(index);
    if (it == m.memo.end()) fail(at, "memo index " + std::to_string(index) + " was never stored");
    return it->second;
  }

  static std::uint64_t decimal(std::string_view s, bool& ok) {
    ok = !s.empty() && s.size() <= 18;
    std::uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') {
        ok = false;
        return 0;
      }
      v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
  }

  // ---- value constructors
  Value* make_str(std::string_view s, std::size_t at) {
    if (!valid_utf8(s)) fail(at, "string is not valid UTF-8");
    return make(Str{std::string(s)}, s.size(), at);
  }

  Value* make_long(std::string_view le, std::size_t at) {
    if (le.empty()) return make(std::int64_t{0}, 0, at);
    if (le.size() <= 8) {
      std::uint64_t u = 0;
      for (std::size_t i = 0; i < le.size(); ++i) {
        u |= static_cast<std::uint64_t>(static_cast<unsigned char>(le[i])) << (8 * i);
      }
      if (le.size() < 8 && (static_cast<unsigned char>(le.back()) & 0x80) != 0) {
        u |= ~std::uint64_t{0} << (8 * le.size());  // sign-extend
      }
      return make(static_cast<std::int64_t>(u), 0, at);
    }
    return make(BigInt{std::string(le)}, le.size(), at);
  }

  Value* make_global(Machine& m, std::string module, std::string name, std::size_t at) {
    if (m.proto < 3) {  // Python 2 names, as CPython's fix_imports maps them
      if (module == "__builtin__") module = "builtins";
      if (module == "copy_reg") module = "copyreg";
    }
    bool allowed = special_of(module, name) != Special::kNone;
    for (const ClassName& c : options_.allowed) {
      if (c.module == module && c.name == name) allowed = true;
    }
    if (!allowed) {
      std::string why = "class " + module + "." + name + " is not allowed";
      if (options_.refusal_note != nullptr) why += options_.refusal_note(module, name);
      fail(at, why);
    }
    const std::size_t payload = module.size() + name.size();
    return make(Global{std::move(module), std::move(name)}, payload, at);
  }

  // ---- typed views of stack values
  template <typename T>
  T* expect(Value* v, const char* what, std::size_t at) {
    T* p = v->as_mutable<T>();
    if (p == nullptr) fail(at, std::string(what) + ", got " + describe(*v));
    return p;
  }

  // The numpy layer reports a Status; here it becomes a failure at this opcode's offset.
  template <typename T>
  T checked(Result<T> r, std::size_t at) {
    if (!r.ok()) fail(at, r.status());
    return std::move(r).value();
  }

  void store_array_data(Array& a, std::string_view raw, bool fortran) {
    charge(raw.size());
    set_array_data(a, raw, fortran);
  }

  // After joblib's NumpyArrayWrapper is BUILT, its array follows in the stream.
  Value* read_wrapped_array(Machine& m, const Value* state, std::size_t at) {
    if (m.nested) fail(at, "NumpyArrayWrapper inside a nested pickle");
    WrappedArray w = checked(wrapper_header(*state, is_ndarray), at);
    const Dtype& dt = w.array.type();
    if (dt.is_object()) {
      // The whole ndarray was pickled again (protocol 2) right here.
      const std::size_t nested_at = pos_;
      Value* inner = run(/*nested=*/true);
      const Array* ia = inner->as<Array>();
      if (ia == nullptr || !ia->built || !ia->type().is_object()) {
        fail(nested_at, "the nested pickle of an object array holds " + describe(*inner));
      }
      if (ia->shape != w.array.shape) {
        fail(nested_at, "the nested object array has shape " + shape_text(ia->shape) +
                            ", its wrapper says " + shape_text(w.array.shape));
      }
      return inner;
    }
    if (w.alignment) {
      const std::size_t pad_at = pos_;
      const auto pad = static_cast<std::int64_t>(uint_le(1, "array padding length"));
      if (pad > *w.alignment) {
        fail(pad_at, "array padding of " + std::to_string(pad) + " bytes exceeds the alignment " +
                         std::to_string(*w.alignment));
      }
      take(static_cast<std::size_t>(pad), "array padding");
    }
    const std::size_t data_at = pos_;
    const std::size_t bytes = checked(data_size(w.array.shape, dt), at);
    if (bytes > left()) {
      fail(data_at, "truncated file: array of shape " + shape_text(w.array.shape) + " and dtype " +
                        dtype_text(dt) + " needs " + std::to_string(bytes) + " bytes, " +
                        std::to_string(left()) + " left");
    }
    w.array.built = true;
    Value* v = make(std::move(w.array), 0, at);
    store_array_data(*v->as_mutable<Array>(), take(bytes, "array data"), w.fortran);
    return v;
  }

  Value* make_array(Array a, std::size_t at) {
    charge(a.data.size() + a.objects.size() * sizeof(Value*));
    return make(std::move(a), 0, at);
  }

  // REDUCE and NEWOBJ: nothing is called; numpy's constructors are read as data.
  Value* apply(Value* callable, Value* args, bool newobj, std::size_t at) {
    const Global* g = callable->as<Global>();
    if (g == nullptr) {
      fail(at, std::string(newobj ? "NEWOBJ" : "REDUCE") + " of " + describe(*callable) +
                   " (only allowed classes can be called)");
    }
    const Tuple* t = args->as<Tuple>();
    if (t == nullptr)
      fail(at, "arguments of " + g->qualified() + " must be a tuple, got " + describe(*args));
    const auto arg = [&](std::size_t i) -> Value* {
      if (i >= t->items.size()) fail(at, g->qualified() + " needs more arguments");
      return t->items[i];
    };
    switch (newobj ? Special::kNone : special_of(g->module, g->name)) {
      case Special::kReconstruct: {
        const Global* sub = arg(0)->as<Global>();
        if (sub == nullptr || !is_ndarray(*sub)) {
          fail(at, "_reconstruct of " + describe(*arg(0)) + ": only numpy.ndarray is supported");
        }
        return make(Array{}, 0, at);
      }
      case Special::kScalar:
        return make_array(checked(scalar_from_args(t->items), at), at);
      case Special::kFromBuffer:
        return make_array(checked(array_from_buffer(t->items), at), at);
      case Special::kDtype: {
        Result<Dtype> d = dtype_from_args(*t);
        if (!d.ok()) fail(at, d.status());
        return make(std::move(*d), 0, at);
      }
      case Special::kCodecsEncode: {
        const std::optional<std::string_view> s = as_str(*arg(0));
        const std::optional<std::string_view> enc = as_str(*arg(1));
        if (!s || !enc || (*enc != "latin1" && *enc != "latin-1")) {
          fail(at, "_codecs.encode is only read as encode(str, 'latin1')");
        }
        std::string out;
        if (!utf8_to_latin1(*s, out)) fail(at, "_codecs.encode: text is not latin-1");
        const std::size_t n = out.size();
        return make(Bytes{std::move(out)}, n, at);
      }
      case Special::kOrderedDict:
        // Its items follow as SETITEMS, as a dict's do.
        if (!t->items.empty()) fail(at, "collections.OrderedDict is only read without arguments");
        return make(Dict{}, 0, at);
      case Special::kBytes:
        if (!t->items.empty()) fail(at, "builtins.bytes is only read without arguments");
        return make(Bytes{}, 0, at);
      case Special::kByteArray: {
        // Read as the bytes it holds (xgboost's Booster state keeps its model in one).
        if (t->items.empty()) return make(Bytes{}, 0, at);
        const Bytes* b = t->items[0]->as<Bytes>();
        if (b == nullptr || t->items.size() != 1)
          fail(at, "builtins.bytearray is only read from one bytes argument");
        return make(Bytes{b->data}, b->data.size(), at);
      }
      case Special::kReconstructor: {
        const Global* cls = arg(0)->as<Global>();
        if (cls == nullptr) fail(at, "copyreg._reconstructor of " + describe(*arg(0)));
        return make(Object{cls->module, cls->name, args, nullptr}, 0, at);
      }
      default:
        break;
    }
    return make(Object{g->module, g->name, args, nullptr}, g->module.size() + g->name.size(), at);
  }

  void build(Machine& m, std::size_t at) {
    Value* state = pop(m, at);
    Value* target = top(m, at);
    if (Object* o = target->as_mutable<Object>()) {
      if (special_of(o->module, o->name) == Special::kArrayWrapper) {
        m.stack.back() = read_wrapped_array(m, state, at);
        return;
      }
      if (o->state != nullptr) fail(at, "object " + o->qualified() + " built twice");
      o->state = state;
      return;
    }
    if (Array* a = target->as_mutable<Array>()) {
      const Status s = set_array_state(*a, *state);
      if (!s.ok()) fail(at, s);
      charge(a->data.size() + a->objects.size() * sizeof(Value*));
      return;
    }
    if (Dtype* d = target->as_mutable<Dtype>()) {
      const Status s = set_dtype_state(*d, *state);
      if (!s.ok()) fail(at, s);
      charge(d->fields.size() * sizeof(DtypeField));
      return;
    }
    fail(at, "BUILD of " + describe(*target));
  }

  // Executes opcodes until STOP; returns what STOP pops.
  Value* run(bool nested) {
    Machine m;
    m.nested = nested;
    while (true) {
      const std::size_t at = pos_;
      const auto op = static_cast<std::uint8_t>(uint_le(1, "opcode"));
      switch (op) {
        case kProto: {
          const auto p = static_cast<int>(uint_le(1, "protocol"));
          if (p < 2 || p > 5)
            fail(at, "pickle protocol " + std::to_string(p) + " is not supported");
          m.proto = p;
          break;
        }
        case kFrame:
          length(8, "FRAME");  // frames never split joblib's array bytes (see header)
          break;
        case kStop: {
          Value* v = pop(m, at);
          return v;
        }
        case kMark:
          if (m.marks.size() >= options_.limits.max_marks) {
            fail(at, "MARK nesting deeper than " + std::to_string(options_.limits.max_marks),
                 Code::kTooLarge);
          }
          m.marks.push_back(m.stack.size());
          break;
        case kPop:
          if (!m.stack.empty() && !m.marks.empty() && m.stack.size() == m.marks.back()) {
            m.marks.pop_back();  // POP of a MARK, as CPython does
          } else {
            pop(m, at);
          }
          break;
        case kPopMark:
          pop_mark(m, at);
          break;
        case kDup:
          push(m, top(m, at));
          break;

        case kNone:
          push(m, make(None{}, 0, at));
          break;
        case kNewTrue:
          push(m, make(true, 0, at));
          break;
        case kNewFalse:
          push(m, make(false, 0, at));
          break;
        case kBinInt:
          push(m, make(static_cast<std::int64_t>(static_cast<std::int32_t>(uint_le(4, "BININT"))),
                       0, at));
          break;
        case kBinInt1:
          push(m, make(static_cast<std::int64_t>(uint_le(1, "BININT1")), 0, at));
          break;
        case kBinInt2:
          push(m, make(static_cast<std::int64_t>(uint_le(2, "BININT2")), 0, at));
          break;
        case kLong1: {
          const std::size_t n = length(1, "LONG1");
          push(m, make_long(take(n, "LONG1"), at));
          break;
        }
        case kLong4: {
          const std::size_t n = length(4, "LONG4");
          push(m, make_long(take(n, "LONG4"), at));
          break;
        }
        case kBinFloat: {
          const std::string_view s = take(8, "BINFLOAT");
          std::uint64_t bits = 0;
          for (char c : s) bits = (bits << 8) | static_cast<unsigned char>(c);  // big-endian
          push(m, make(std::bit_cast<double>(bits), 0, at));
          break;
        }
        case kShortBinUnicode:
          push(m, make_str(take(length(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE"), at));
          break;
        case kBinUnicode:
          push(m, make_str(take(length(4, "BINUNICODE"), "BINUNICODE"), at));
          break;
        case kBinUnicode8:
          push(m, make_str(take(length(8, "BINUNICODE8"), "BINUNICODE8"), at));
          break;
        case kShortBinBytes:
        case kBinBytes:
        case kBinBytes8:
        case kByteArray8: {
          const std::size_t width = op == kShortBinBytes ? 1 : op == kBinBytes ? 4 : 8;
          const std::string_view s = take(length(width, "BINBYTES"), "BINBYTES");
          push(m, make(Bytes{std::string(s)}, s.size(), at));
          break;
        }

        case kEmptyList:
        case kEmptySet:
          push(m, make(List{}, 0, at));
          break;
        case kEmptyTuple:
          push(m, make(Tuple{}, 0, at));
          break;
        case kEmptyDict:
          push(m, make(Dict{}, 0, at));
          break;
        case kList:
        case kFrozenSet: {
          std::vector<Value*> items = pop_mark(m, at);
          const std::size_t n = items.size();
          push(m, make(List{std::move(items)}, n * sizeof(Value*), at));
          break;
        }
        case kTuple: {
          std::vector<Value*> items = pop_mark(m, at);
          const std::size_t n = items.size();
          push(m, make(Tuple{std::move(items)}, n * sizeof(Value*), at));
          break;
        }
        case kTuple1:
        case kTuple2:
        case kTuple3: {
          const std::size_t n = op - kTuple1 + 1u;
          std::vector<Value*> items(n);
          for (std::size_t i = n; i-- > 0;) items[i] = pop(m, at);
          push(m, make(Tuple{std::move(items)}, n * sizeof(Value*), at));
          break;
        }
        case kDict: {
          std::vector<Value*> items = pop_mark(m, at);
          if (items.size() % 2 != 0) fail(at, "DICT with an odd number of items");
          Dict d;
          for (std::size_t i = 0; i < items.size(); i += 2)
            d.entries.emplace_back(items[i], items[i + 1]);
          const std::size_t n = d.entries.size();
          push(m, make(std::move(d), n * 2 * sizeof(Value*), at));
          break;
        }
        case kAppend: {
          Value* v = pop(m, at);
          List* l = expect<List>(top(m, at), "APPEND needs a list", at);
          charge(sizeof(Value*));
          l->items.push_back(v);
          break;
        }
        case kAppends:
        case kAddItems: {
          std::vector<Value*> items = pop_mark(m, at);
          List* l = expect<List>(top(m, at), "APPENDS needs a list", at);
          charge(items.size() * sizeof(Value*));
          l->items.insert(l->items.end(), items.begin(), items.end());
          break;
        }
        case kSetItem: {
          Value* v = pop(m, at);
          Value* k = pop(m, at);
          Dict* d = expect<Dict>(top(m, at), "SETITEM needs a dict", at);
          charge(2 * sizeof(Value*));
          d->entries.emplace_back(k, v);
          break;
        }
        case kSetItems: {
          std::vector<Value*> items = pop_mark(m, at);
          if (items.size() % 2 != 0) fail(at, "SETITEMS with an odd number of items");
          Dict* d = expect<Dict>(top(m, at), "SETITEMS needs a dict", at);
          charge(items.size() * sizeof(Value*));
          for (std::size_t i = 0; i < items.size(); i += 2)
            d->entries.emplace_back(items[i], items[i + 1]);
          break;
        }

        case kPut: {
          bool ok = false;
          const std::uint64_t i = decimal(line("PUT"), ok);
          if (!ok) fail(at, "PUT index is not a decimal number");
          memo_put(m, i, at);
          break;
        }
        case kBinPut:
          memo_put(m, uint_le(1, "BINPUT"), at);
          break;
        case kLongBinPut:
          memo_put(m, uint_le(4, "LONG_BINPUT"), at);
          break;
        case kMemoize:
          memo_put(m, m.memo.size(), at);
          break;
        case kGet: {
          bool ok = false;
          const std::uint64_t i = decimal(line("GET"), ok);
          if (!ok) fail(at, "GET index is not a decimal number");
          push(m, memo_get(m, i, at));
          break;
        }
        case kBinGet:
          push(m, memo_get(m, uint_le(1, "BINGET"), at));
          break;
        case kLongBinGet:
          push(m, memo_get(m, uint_le(4, "LONG_BINGET"), at));
          break;

        case kGlobal: {
          std::string module(line("GLOBAL module"));
          std::string name(line("GLOBAL name"));
          push(m, make_global(m, std::move(module), std::move(name), at));
          break;
        }
        case kStackGlobal: {
          Value* name = pop(m, at);
          Value* module = pop(m, at);
          const std::optional<std::string_view> ns = as_str(*name);
          const std::optional<std::string_view> ms = as_str(*module);
          if (!ns || !ms) fail(at, "STACK_GLOBAL needs two strings");
          push(m, make_global(m, std::string(*ms), std::string(*ns), at));
          break;
        }
        case kReduce: {
          Value* args = pop(m, at);
          Value* callable = pop(m, at);
          push(m, apply(callable, args, /*newobj=*/false, at));
          break;
        }
        case kNewObj: {
          Value* args = pop(m, at);
          Value* cls = pop(m, at);
          push(m, apply(cls, args, /*newobj=*/true, at));
          break;
        }
        case kNewObjEx: {
          Value* kwargs = pop(m, at);
          Value* args = pop(m, at);
          Value* cls = pop(m, at);
          const Dict* kw = kwargs->as<Dict>();
          if (kw == nullptr || !kw->entries.empty())
            fail(at, "NEWOBJ_EX with keyword arguments is not supported");
          push(m, apply(cls, args, /*newobj=*/true, at));
          break;
        }
        case kBuild:
          build(m, at);
          break;

        default:
          fail(at, "opcode " + hex_byte(op) + " is not supported");
      }
    }
  }

  std::string_view in_;
  const Options& options_;
  Document& doc_;
  std::size_t pos_ = 0;
  std::size_t budget_ = 0;
};

Result<std::unique_ptr<Document>> read_pickle(std::string_view bytes, std::string_view file,
                                              const Options& options) {
  auto doc = std::make_unique<Document>();
  try {
    Reader reader(bytes, options, *doc);
    reader.read_all();
  } catch (const ParseError& e) {
    return Status(e.code, std::string(file) + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted,
                  std::string(file) + ": out of memory reading the pickle");
  }
  return doc;
}

}  // namespace estimator::models::pickle
