// SPDX-License-Identifier: Apache-2.0
#include "models/pickle_numpy.h"

#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "models/shape_text.h"

namespace estimator::models::pickle {

namespace {

constexpr std::int64_t kMaxDim = std::int64_t{1} << 40;
constexpr std::int64_t kMaxItemsize = std::int64_t{1} << 20;
constexpr std::size_t kMaxDims = 32;

Status invalid(std::string message) { return Status(Code::kInvalidArgument, std::move(message)); }

char native_order() { return std::endian::native == std::endian::little ? '<' : '>'; }

bool numeric_kind(const Dtype& d) {
  if (d.has_subarray || !d.fields.empty()) return false;
  const bool sized = d.itemsize == 1 || d.itemsize == 2 || d.itemsize == 4 || d.itemsize == 8;
  switch (d.kind) {
    case 'b':
      return d.itemsize == 1;
    case 'i':
    case 'u':
      return sized;
    case 'f':
      return d.itemsize == 4 || d.itemsize == 8;
    default:
      return false;
  }
}

std::uint64_t load_bits(const char* p, std::size_t n, char byteorder) {
  std::uint64_t u = 0;
  const bool big = byteorder == '>';
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t k = big ? n - 1 - i : i;  // k = significance of byte i
    u |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * k);
  }
  return u;
}

double element_double(const Dtype& d, const char* p) {
  const auto n = static_cast<std::size_t>(d.itemsize);
  const std::uint64_t u = load_bits(p, n, d.byteorder);
  switch (d.kind) {
    case 'f':
      if (n == 4) return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(u)));
      return std::bit_cast<double>(u);
    case 'i': {
      const unsigned shift = static_cast<unsigned>(64 - 8 * n);
      return static_cast<double>(static_cast<std::int64_t>(u << shift) >> shift);
    }
    default:
      return static_cast<double>(u);
  }
}

std::optional<std::int64_t> element_int(const Dtype& d, const char* p) {
  const auto n = static_cast<std::size_t>(d.itemsize);
  const std::uint64_t u = load_bits(p, n, d.byteorder);
  switch (d.kind) {
    case 'i': {
      const unsigned shift = static_cast<unsigned>(64 - 8 * n);
      return static_cast<std::int64_t>(u << shift) >> shift;
    }
    case 'u':
    case 'b':
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return std::nullopt;
      return static_cast<std::int64_t>(u);
    default:
      return std::nullopt;
  }
}

std::optional<double> to_double(const Dtype& d, const char* p) { return element_double(d, p); }

template <typename T, typename F>
Result<std::vector<T>> elements(const Array& a, const Dtype& elem, std::size_t offset,
                                std::string_view what, F&& convert) {
  if (!a.built) return invalid(std::string(what) + " is an ndarray never built");
  if (!numeric_kind(elem)) {
    return invalid(std::string(what) + " has dtype " + dtype_text(elem) + ", not a numeric type");
  }
  const auto stride = static_cast<std::size_t>(a.type().itemsize);
  const auto n = static_cast<std::size_t>(a.count());
  std::vector<T> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::optional<T> v = convert(elem, a.data.data() + i * stride + offset);
    if (!v) return invalid(std::string(what) + " element " + std::to_string(i) + " is not an integer");
    out.push_back(*v);
  }
  return out;
}

// An object array of Python numbers, as scikit-learn 1.1 kept a KNeighborsRegressor's _y
// when it was fitted on a list of floats: read as numpy's astype(float64) would, but only
// from floats and ints (Python's or numpy's scalars); anything else is not a number here.
Result<std::vector<double>> object_doubles(const Array& a, std::string_view what) {
  std::vector<double> out;
  out.reserve(a.objects.size());
  for (std::size_t i = 0; i < a.objects.size(); ++i) {
    const Value& v = *a.objects[i];
    const Array* s = numeric_scalar(v);
    const bool number = v.kind() == Kind::kFloat || v.kind() == Kind::kInt ||
                        (s != nullptr && s->type().kind != 'b');
    if (!number) {
      return invalid(std::string(what) + " is an object array whose element " + std::to_string(i) +
                     " is " + describe(v) + ": only floats and ints are read as numbers");
    }
    out.push_back(*as_number(v));
  }
  return out;
}

Result<const DtypeField*> find_field(const Array& a, std::string_view field,
                                     std::string_view what) {
  if (!a.built) return invalid(std::string(what) + " is an ndarray never built");
  const DtypeField* f = a.type().field(field);
  if (f == nullptr) return invalid(std::string(what) + " has no field '" + std::string(field) + "'");
  return f;
}

bool parse_decimal(std::string_view s, std::uint64_t& v) {
  if (s.empty() || s.size() > 18) return false;
  v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

Result<std::int64_t> int_of(const Value& v, std::string_view what) {
  const std::optional<std::int64_t> i = as_int(v);
  if (!i) return invalid(std::string(what) + " must be an int, got " + describe(v));
  return *i;
}

std::int64_t element_count(const std::vector<std::int64_t>& shape, bool& fits) {
  std::int64_t count = 1;
  fits = true;
  for (std::int64_t d : shape) {
    if (d != 0 && count > kMaxDim / d) {
      fits = false;
      return 0;
    }
    count *= d;
  }
  return count;
}

// Raw bytes in Fortran order -> C order. Not inlined: GCC 12 inlining it into
// set_array_data reports a bogus free-nonheap-object on its index vectors.
[[gnu::noinline]] std::string to_c_order(std::string_view raw, const std::vector<std::int64_t>& shape,
                       std::size_t itemsize) {
  std::string out(raw.size(), '\0');
  const std::size_t nd = shape.size();
  std::vector<std::int64_t> idx(nd, 0);
  std::vector<std::int64_t> fstride(nd, 1);  // element strides of the Fortran layout
  for (std::size_t k = 1; k < nd; ++k) fstride[k] = fstride[k - 1] * shape[k - 1];
  const std::size_t count = itemsize == 0 ? 0 : raw.size() / itemsize;
  for (std::size_t c = 0; c < count; ++c) {
    std::int64_t f = 0;
    for (std::size_t k = 0; k < nd; ++k) f += idx[k] * fstride[k];
    std::memcpy(out.data() + c * itemsize, raw.data() + static_cast<std::size_t>(f) * itemsize,
                itemsize);
    for (std::size_t k = nd; k-- > 0;) {  // advance the C-order index
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

Result<bool> order_is_fortran(const Value& v, std::string_view what) {
  const std::optional<std::string_view> order = as_str(v);
  if (!order || (*order != "C" && *order != "F"))
    return invalid(std::string(what) + " order must be 'C' or 'F'");
  return *order == "F";
}

}  // namespace

// ---- element access

const Array* numeric_scalar(const Value& v) {
  const Array* a = v.as<Array>();
  if (a == nullptr || !a->built || !a->shape.empty() || !numeric_kind(a->type())) return nullptr;
  return a;
}

double scalar_double(const Array& scalar) {
  return element_double(scalar.type(), scalar.data.data());
}

std::optional<std::int64_t> scalar_int(const Array& scalar) {
  return element_int(scalar.type(), scalar.data.data());
}

Result<std::vector<double>> array_doubles(const Array& a, std::string_view what) {
  if (!a.built) return invalid(std::string(what) + " is an ndarray never built");
  if (a.type().is_object()) return object_doubles(a, what);
  return elements<double>(a, a.type(), 0, what, to_double);
}

Result<std::vector<std::int64_t>> array_ints(const Array& a, std::string_view what) {
  if (!a.built) return invalid(std::string(what) + " is an ndarray never built");
  return elements<std::int64_t>(a, a.type(), 0, what, element_int);
}

Result<std::vector<double>> field_doubles(const Array& a, std::string_view field,
                                          std::string_view what) {
  Result<const DtypeField*> f = find_field(a, field, what);
  if (!f.ok()) return f.status();
  return elements<double>(a, *(*f)->dtype->as<Dtype>(), static_cast<std::size_t>((*f)->offset),
                          what, to_double);
}

Result<std::vector<std::int64_t>> field_ints(const Array& a, std::string_view field,
                                             std::string_view what) {
  Result<const DtypeField*> f = find_field(a, field, what);
  if (!f.ok()) return f.status();
  return elements<std::int64_t>(a, *(*f)->dtype->as<Dtype>(),
                                static_cast<std::size_t>((*f)->offset), what, element_int);
}

// ---- builders

Result<Dtype> dtype_from_args(const Tuple& args) {
  if (args.items.empty()) return invalid("numpy.dtype() without arguments");
  const std::optional<std::string_view> s = as_str(*args.items[0]);
  if (!s || s->empty())
    return invalid("numpy.dtype() argument must be a type string, got " +
                   describe(*args.items[0]));
  Dtype d;
  d.kind = (*s)[0];
  if (std::string_view("biufcOVUSMm").find(d.kind) == std::string_view::npos)
    return invalid("numpy dtype '" + std::string(*s) + "' is not supported");
  std::uint64_t size = 0;
  const std::string_view digits = s->substr(1);
  if ((!digits.empty() && !parse_decimal(digits, size)) ||
      size > static_cast<std::uint64_t>(kMaxItemsize)) {
    return invalid("numpy dtype '" + std::string(*s) + "' has a bad item size");
  }
  d.itemsize = static_cast<std::int64_t>(size);
  if (d.kind == 'O' && d.itemsize == 0) d.itemsize = 8;
  const bool single =
      d.itemsize <= 1 || d.kind == 'O' || d.kind == 'V' || d.kind == 'S' || d.kind == 'b';
  d.byteorder = single ? '|' : native_order();
  return d;
}

Result<const Dtype*> dtype_of(const Value& v, std::string_view what) {
  const Dtype* d = v.as<Dtype>();
  if (d == nullptr) return invalid(std::string(what) + " must be a numpy dtype, got " + describe(v));
  if (d->itemsize <= 0 && !d->is_object())
    return invalid(std::string(what) + " has no item size (" + describe(v) + ")");
  return d;
}

Status set_dtype_state(Dtype& d, const Value& state) {
  const Tuple* t = state.as<Tuple>();
  if (t == nullptr || (t->items.size() != 8 && t->items.size() != 9))
    return invalid("numpy dtype state must be a tuple of 8 or 9 items, got " + describe(state));
  Result<std::int64_t> version = int_of(*t->items[0], "dtype state version");
  if (!version.ok()) return version.status();
  if (*version != 3 && *version != 4)
    return invalid("numpy dtype state version " + std::to_string(*version) + " is not supported");
  const std::optional<std::string_view> order = as_str(*t->items[1]);
  if (!order || order->size() != 1 ||
      std::string_view("<>|=").find((*order)[0]) == std::string_view::npos) {
    return invalid("bad dtype byte order " + describe(*t->items[1]));
  }
  const char bo = (*order)[0];
  d.byteorder = bo == '=' ? native_order() : bo;
  d.has_subarray = t->items[2]->kind() != Kind::kNone;
  Result<std::int64_t> elsize = int_of(*t->items[5], "dtype element size");
  if (!elsize.ok()) return elsize.status();
  if (*elsize > kMaxItemsize)
    return invalid("dtype element size " + std::to_string(*elsize) + " is too large");
  if (*elsize >= 0 && (d.kind == 'V' || d.kind == 'U' || d.kind == 'S')) d.itemsize = *elsize;

  const Value* names = t->items[3];
  const Value* fields = t->items[4];
  if (names->kind() == Kind::kNone) return Status::Ok();
  const Tuple* nt = names->as<Tuple>();
  const Dict* fd = fields->as<Dict>();
  if (nt == nullptr || fd == nullptr)
    return invalid("structured dtype needs a names tuple and a fields dict");
  for (const Value* n : nt->items) {
    const std::optional<std::string_view> name = as_str(*n);
    if (!name) return invalid("dtype field name must be a str, got " + describe(*n));
    const Value* f = fd->find(*name);
    const Tuple* ft = f == nullptr ? nullptr : f->as<Tuple>();
    if (ft == nullptr || ft->items.size() < 2)
      return invalid("dtype field '" + std::string(*name) + "' has no (dtype, offset) entry");
    Result<const Dtype*> sub = dtype_of(*ft->items[0], "dtype field type");
    if (!sub.ok()) return sub.status();
    Result<std::int64_t> offset = int_of(*ft->items[1], "dtype field offset");
    if (!offset.ok()) return offset.status();
    if (*offset < 0 || (*sub)->itemsize > d.itemsize || *offset > d.itemsize - (*sub)->itemsize) {
      return invalid("dtype field '" + std::string(*name) + "' at offset " +
                     std::to_string(*offset) + " does not fit in an item of " +
                     std::to_string(d.itemsize) + " bytes");
    }
    d.fields.push_back(DtypeField{std::string(*name), ft->items[0], *offset});
  }
  return Status::Ok();
}

Result<std::vector<std::int64_t>> shape_of(const Value& v) {
  const Tuple* t = v.as<Tuple>();
  if (t == nullptr) return invalid("array shape must be a tuple, got " + describe(v));
  if (t->items.size() > kMaxDims) return invalid("array has more than 32 dimensions");
  std::vector<std::int64_t> shape;
  for (const Value* d : t->items) {
    Result<std::int64_t> n = int_of(*d, "array dimension");
    if (!n.ok()) return n.status();
    if (*n < 0 || *n > kMaxDim)
      return invalid("array dimension " + std::to_string(*n) + " out of range");
    shape.push_back(*n);
  }
  return shape;
}

Result<std::size_t> data_size(const std::vector<std::int64_t>& shape, const Dtype& dt) {
  bool fits = true;
  const std::int64_t count = element_count(shape, fits);
  if (!fits || (dt.itemsize != 0 && count > std::numeric_limits<std::int64_t>::max() / dt.itemsize))
    return Status(Code::kTooLarge, "array of shape " + shape_text(shape) + " is too large");
  return static_cast<std::size_t>(count * dt.itemsize);
}

void set_array_data(Array& a, std::string_view raw, bool fortran) {
  if (fortran && a.shape.size() > 1) {
    a.data = to_c_order(raw, a.shape, static_cast<std::size_t>(a.type().itemsize));
  } else {
    a.data.assign(raw);
  }
}

// ndarray.__setstate__: (version, shape, dtype, is_fortran, data) or without version.
Status set_array_state(Array& a, const Value& state) {
  if (a.built) return invalid("ndarray built twice");
  const Tuple* t = state.as<Tuple>();
  if (t == nullptr || (t->items.size() != 4 && t->items.size() != 5))
    return invalid("ndarray state must be a tuple of 4 or 5 items, got " + describe(state));
  const std::size_t o = t->items.size() - 4;
  if (o == 1) {
    Result<std::int64_t> version = int_of(*t->items[0], "ndarray state version");
    if (!version.ok()) return version.status();
    if (*version != 1)
      return invalid("ndarray state version " + std::to_string(*version) + " is not supported");
  }
  Result<std::vector<std::int64_t>> shape = shape_of(*t->items[o]);
  if (!shape.ok()) return shape.status();
  Result<const Dtype*> dt = dtype_of(*t->items[o + 1], "ndarray dtype");
  if (!dt.ok()) return dt.status();
  const std::optional<bool> fortran = as_bool(*t->items[o + 2]);
  if (!fortran) return invalid("ndarray is_fortran must be a bool, got " + describe(*t->items[o + 2]));
  const Value& data = *t->items[o + 3];
  Result<std::size_t> bytes = data_size(*shape, **dt);
  if (!bytes.ok()) return bytes.status();
  if ((*dt)->is_object()) {
    const List* l = data.as<List>();
    if (l == nullptr) return invalid("object ndarray data must be a list, got " + describe(data));
    bool fits = true;
    const auto count = static_cast<std::size_t>(element_count(*shape, fits));
    if (l->items.size() != count) {
      return invalid("object ndarray of shape " + shape_text(*shape) + " has " +
                     std::to_string(l->items.size()) + " elements");
    }
    if (*fortran && shape->size() > 1)
      return invalid("Fortran-ordered object arrays are not supported");
    a.shape = std::move(*shape);
    a.dtype = t->items[o + 1];
    a.objects.assign(l->items.begin(), l->items.end());
  } else {
    const Bytes* b = data.as<Bytes>();
    if (b == nullptr) return invalid("ndarray data must be bytes, got " + describe(data));
    if (b->data.size() != *bytes) {
      return invalid("ndarray of shape " + shape_text(*shape) + " and dtype " + dtype_text(**dt) +
                     " needs " + std::to_string(*bytes) + " bytes, the pickle holds " +
                     std::to_string(b->data.size()));
    }
    a.shape = std::move(*shape);
    a.dtype = t->items[o + 1];
    set_array_data(a, b->data, *fortran);
  }
  a.built = true;
  return Status::Ok();
}

Result<Array> scalar_from_args(std::span<Value* const> args) {
  if (args.size() < 2) return invalid("numpy scalar needs a dtype and bytes");
  Result<const Dtype*> dt = dtype_of(*args[0], "numpy scalar dtype");
  if (!dt.ok()) return dt.status();
  if ((*dt)->is_object()) return invalid("object numpy scalars are not supported");
  const Bytes* b = args[1]->as<Bytes>();
  if (b == nullptr) return invalid("numpy scalar data must be bytes, got " + describe(*args[1]));
  if (static_cast<std::int64_t>(b->data.size()) != (*dt)->itemsize) {
    return invalid("numpy scalar of dtype " + dtype_text(**dt) + " holds " +
                   std::to_string(b->data.size()) + " bytes");
  }
  Array a;
  a.dtype = args[0];
  a.built = true;
  set_array_data(a, b->data, false);
  return a;
}

Result<Array> array_from_buffer(std::span<Value* const> args) {
  if (args.size() < 4) return invalid("_frombuffer needs bytes, dtype, shape and order");
  const Bytes* b = args[0]->as<Bytes>();
  if (b == nullptr) return invalid("_frombuffer data must be bytes, got " + describe(*args[0]));
  Result<const Dtype*> dt = dtype_of(*args[1], "_frombuffer dtype");
  if (!dt.ok()) return dt.status();
  if ((*dt)->is_object()) return invalid("_frombuffer of an object dtype");
  Result<std::vector<std::int64_t>> shape = shape_of(*args[2]);
  if (!shape.ok()) return shape.status();
  Result<bool> fortran = order_is_fortran(*args[3], "_frombuffer");
  if (!fortran.ok()) return fortran.status();
  Result<std::size_t> need = data_size(*shape, **dt);
  if (!need.ok()) return need.status();
  if (b->data.size() != *need) {
    return invalid("_frombuffer of shape " + shape_text(*shape) + " needs " +
                   std::to_string(*need) + " bytes, the pickle holds " +
                   std::to_string(b->data.size()));
  }
  Array a;
  a.dtype = args[1];
  a.shape = std::move(*shape);
  a.built = true;
  set_array_data(a, b->data, *fortran);
  return a;
}

Result<WrappedArray> wrapper_header(const Value& state, bool (*is_ndarray)(const Global&)) {
  const Dict* d = state.as<Dict>();
  if (d == nullptr) return invalid("NumpyArrayWrapper state must be a dict, got " + describe(state));
  const char* missing = nullptr;
  const auto need = [&](const char* key) {
    const Value* v = d->find(key);
    if (v == nullptr && missing == nullptr) missing = key;
    return v;
  };
  const Value* subclass = need("subclass");
  const Value* shape_v = need("shape");
  const Value* dtype_v = need("dtype");
  const Value* order_v = need("order");
  if (missing != nullptr)
    return invalid(std::string("NumpyArrayWrapper state has no '") + missing + "'");
  const Global* g = subclass->as<Global>();
  if (g == nullptr || !is_ndarray(*g))
    return invalid("NumpyArrayWrapper of " + describe(*subclass) +
                   ": only numpy.ndarray is supported");
  WrappedArray w;
  Result<std::vector<std::int64_t>> shape = shape_of(*shape_v);
  if (!shape.ok()) return shape.status();
  w.array.shape = std::move(*shape);
  Result<const Dtype*> dt = dtype_of(*dtype_v, "NumpyArrayWrapper dtype");
  if (!dt.ok()) return dt.status();
  w.array.dtype = dtype_v;
  Result<bool> fortran = order_is_fortran(*order_v, "NumpyArrayWrapper");
  if (!fortran.ok()) return fortran.status();
  w.fortran = *fortran;
  const Value* align = d->find("numpy_array_alignment_bytes");
  if (align != nullptr && align->kind() != Kind::kNone) {
    Result<std::int64_t> alignment = int_of(*align, "numpy_array_alignment_bytes");
    if (!alignment.ok()) return alignment.status();
    if (*alignment < 1 || *alignment > 255)
      return invalid("bad numpy_array_alignment_bytes " + std::to_string(*alignment));
    w.alignment = static_cast<int>(*alignment);
  }
  return w;
}

}  // namespace estimator::models::pickle
