// SPDX-License-Identifier: Apache-2.0
// The restricted pickle reader (models/pickle.h) on pickles written here opcode by opcode:
// values and memo, numpy arrays (ndarray pickles, joblib's wrapper with its padding,
// Fortran order, byte order, object arrays as nested pickles), and everything a hostile
// file can try (forbidden classes, truncation, bad memo indices, huge lengths, deep
// nesting, memory blow-up, byte corruption). Also the scikit-learn loader on pickles
// built the same way: the float32 threshold rule and refusals.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "models/pickle.h"
#include "models/sklearn_model.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

using estimator::testing::read_file;

namespace fs = std::filesystem;
using pickle::Options;
using pickle::Value;

// ---- a pickle writer for tests --------------------------------------------------------

class PickleWriter {
 public:
  PickleWriter& op(std::uint8_t o) {
    out_.push_back(static_cast<char>(o));
    return *this;
  }
  PickleWriter& raw(std::string_view s) {
    out_.append(s);
    return *this;
  }
  PickleWriter& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  PickleWriter& proto(int p) { return op(0x80).le(static_cast<std::uint64_t>(p), 1); }
  PickleWriter& frame(std::uint64_t n) { return op(0x95).le(n, 8); }
  PickleWriter& stop() { return op('.'); }
  PickleWriter& mark() { return op('('); }
  PickleWriter& none() { return op('N'); }
  PickleWriter& boolean(bool b) { return op(b ? 0x88 : 0x89); }
  PickleWriter& integer(std::int64_t v) {
    if (v >= 0 && v < 256) return op('K').le(static_cast<std::uint64_t>(v), 1);
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').le(static_cast<std::uint32_t>(v), 4);
    return op(0x8a).le(8, 1).le(static_cast<std::uint64_t>(v), 8);
  }
  PickleWriter& real(double d) {
    const auto bits = std::bit_cast<std::uint64_t>(d);
    op('G');
    for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
    return *this;
  }
  PickleWriter& str(std::string_view s) {
    if (s.size() < 256) return op(0x8c).le(s.size(), 1).raw(s);
    return op('X').le(s.size(), 4).raw(s);
  }
  PickleWriter& bytes(std::string_view s) {
    if (s.size() < 256) return op('C').le(s.size(), 1).raw(s);
    return op('B').le(s.size(), 4).raw(s);
  }
  PickleWriter& global(std::string_view module, std::string_view name) {
    return op('c').raw(module).raw("\n").raw(name).raw("\n");
  }
  PickleWriter& stack_global(std::string_view module, std::string_view name) {
    return str(module).str(name).op(0x93);
  }
  PickleWriter& empty_tuple() { return op(')'); }
  PickleWriter& tuple() { return op('t'); }
  PickleWriter& tuple1() { return op(0x85); }
  PickleWriter& tuple2() { return op(0x86); }
  PickleWriter& tuple3() { return op(0x87); }
  PickleWriter& empty_list() { return op(']'); }
  PickleWriter& appends() { return op('e'); }
  PickleWriter& empty_dict() { return op('}'); }
  PickleWriter& setitems() { return op('u'); }
  PickleWriter& reduce() { return op('R'); }
  PickleWriter& newobj() { return op(0x81); }
  PickleWriter& build() { return op('b'); }
  PickleWriter& memoize() { return op(0x94); }
  PickleWriter& binput(int i) { return op('q').le(static_cast<std::uint64_t>(i), 1); }
  PickleWriter& binget(int i) { return op('h').le(static_cast<std::uint64_t>(i), 1); }

  // numpy.dtype(typestr, False, True) with its BUILD state; byteorder '<', '>' or '|'.
  PickleWriter& dtype(std::string_view typestr, char byteorder = '<') {
    global("numpy", "dtype").str(typestr).boolean(false).boolean(true).tuple3().reduce();
    mark()
        .integer(3)
        .str(std::string(1, byteorder))
        .none()
        .none()
        .none()
        .integer(-1)
        .integer(-1)
        .integer(0)
        .tuple();
    return build();
  }
  struct Field {
    std::string name;
    std::string type;
    std::int64_t offset;
  };
  PickleWriter& struct_dtype(const std::vector<Field>& fields, std::int64_t itemsize) {
    global("numpy", "dtype")
        .str("V" + std::to_string(itemsize))
        .boolean(false)
        .boolean(true)
        .tuple3()
        .reduce();
    mark().integer(3).str("|").none();
    mark();
    for (const Field& f : fields) str(f.name);
    tuple();
    empty_dict().mark();
    for (const Field& f : fields) {
      str(f.name);
      dtype(f.type, f.type[0] == 'u' && f.type == "u1" ? '|' : '<');
      integer(f.offset).tuple2();
    }
    setitems();
    integer(itemsize).integer(1).integer(16).tuple();
    return build();
  }
  // ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype, F, data).
  template <typename DtypeFn>
  PickleWriter& ndarray(const std::vector<std::int64_t>& shape, DtypeFn&& write_dtype,
                        std::string_view data, bool fortran = false) {
    empty_ndarray();
    mark().integer(1);
    shape_tuple(shape);
    write_dtype(*this);
    boolean(fortran).bytes(data).tuple();
    return build();
  }
  // The _reconstruct(ndarray, (0,), b'b') an array's state is then built into.
  PickleWriter& empty_ndarray() {
    return global("numpy.core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .integer(0)
        .tuple1()
        .bytes("b")
        .tuple3()
        .reduce();
  }
  PickleWriter& shape_tuple(const std::vector<std::int64_t>& shape) {
    mark();
    for (std::int64_t d : shape) integer(d);
    return tuple();
  }
  // joblib's NumpyArrayWrapper, then the array bytes (padded as joblib >= 1.2 does when
  // alignment > 0; no padding byte at all when alignment == 0, as older joblib).
  PickleWriter& wrapper(const std::vector<std::int64_t>& shape, std::string_view typestr,
                        char byteorder, std::string_view order, std::string_view data,
                        int alignment = 16) {
    stack_global("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple().newobj();
    empty_dict().mark();
    str("subclass").stack_global("numpy", "ndarray");
    str("shape");
    shape_tuple(shape);
    str("order").str(order);
    str("dtype").dtype(typestr, byteorder);
    str("allow_mmap").boolean(true);
    if (alignment > 0) str("numpy_array_alignment_bytes").integer(alignment);
    setitems().build();
    if (alignment > 0) {
      const std::size_t after = out_.size() + 1;
      const std::size_t pad =
          static_cast<std::size_t>(alignment) - after % static_cast<std::size_t>(alignment);
      le(pad, 1);
      out_.append(pad, '\xff');
    }
    return raw(data);
  }

  const std::string& bytes_so_far() const { return out_; }
  std::string done() { return out_; }

 private:
  std::string out_;
};

std::string f8(std::initializer_list<double> values) {
  std::string s;
  for (double v : values) {
    const auto bits = std::bit_cast<std::uint64_t>(v);
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return s;
}

std::string f8_big(std::initializer_list<double> values) {
  std::string s;
  for (double v : values) {
    const auto bits = std::bit_cast<std::uint64_t>(v);
    for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return s;
}

std::string i8(std::initializer_list<std::int64_t> values) {
  std::string s;
  for (std::int64_t v : values) {
    for (int i = 0; i < 8; ++i)
      s.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
  }
  return s;
}

Result<std::unique_ptr<pickle::Document>> read(const std::string& bytes,
                                               const Options& options = {}) {
  return pickle::read_pickle(bytes, "test.pkl", options);
}

std::unique_ptr<pickle::Document> must_read(const std::string& bytes, const Options& options = {}) {
  auto r = read(bytes, options);
  if (!r.ok()) {
    ADD_FAILURE() << r.status().to_string();
    return nullptr;
  }
  return std::move(*r);
}

::testing::AssertionResult refused(const std::string& bytes, std::string_view needle,
                                   const Options& options = {}) {
  auto r = read(bytes, options);
  if (r.ok())
    return ::testing::AssertionFailure()
           << "accepted, expected an error containing '" << needle << "'";
  if (r.status().message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "error '" << r.status().to_string() << "' lacks '" << needle << "'";
  }
  return ::testing::AssertionSuccess();
}

const Value& at(const Value& v, std::size_t i) { return *pickle::items(v)[i]; }

fs::path fixtures() { return fs::path(SKLEARN_FIXTURES_DIR); }

// ---- values ---------------------------------------------------------------------------

TEST(PickleReader, ScalarsContainersAndMemo) {
  PickleWriter w;
  w.proto(4).frame(0).empty_dict().memoize().mark();
  w.str("small").integer(7);
  w.str("neg").integer(-5);
  w.str("big").integer(std::int64_t{1} << 40);
  w.str("long1").op(0x8a).le(3, 1).raw("\xff\xff\x7f");                 // 0x7fffff
  w.str("long1neg").op(0x8a).le(2, 1).raw(std::string("\x00\x80", 2));  // -32768
  w.str("huge").op(0x8a).le(17, 1).raw(std::string(17, '\x01'));
  w.str("pi").real(3.141592653589793);
  w.str("none").none();
  w.str("yes").boolean(true);
  w.str("data").bytes(std::string("\x00\x01\x02", 3));
  w.str("list").empty_list().memoize().mark().integer(1).str("two").appends();
  w.str("again").binget(1);  // the same list object (memo 1)
  w.str("tup").integer(1).integer(2).tuple2();
  w.str("small").integer(8);  // a key set twice: the later one wins
  w.setitems().stop();
  auto doc = must_read(w.done());
  ASSERT_TRUE(doc);
  const auto* d = doc->root().as<pickle::Dict>();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(pickle::as_int(*d->find("small")), 8);
  EXPECT_EQ(pickle::as_int(*d->find("neg")), -5);
  EXPECT_EQ(pickle::as_int(*d->find("big")), std::int64_t{1} << 40);
  EXPECT_EQ(pickle::as_int(*d->find("long1")), 0x7fffff);
  EXPECT_EQ(pickle::as_int(*d->find("long1neg")), -32768);
  EXPECT_EQ(d->find("huge")->kind(), pickle::Kind::kBigInt);
  EXPECT_FALSE(pickle::as_int(*d->find("huge")));
  EXPECT_EQ(pickle::as_number(*d->find("pi")), 3.141592653589793);
  EXPECT_EQ(d->find("none")->kind(), pickle::Kind::kNone);
  EXPECT_EQ(pickle::as_bool(*d->find("yes")), true);
  EXPECT_EQ(d->find("data")->as<pickle::Bytes>()->data, std::string("\x00\x01\x02", 3));
  EXPECT_EQ(d->find("list"), d->find("again"));
  ASSERT_EQ(pickle::items(*d->find("list")).size(), 2u);
  EXPECT_EQ(pickle::as_str(at(*d->find("list"), 1)), "two");
  EXPECT_EQ(pickle::items(*d->find("tup")).size(), 2u);
  EXPECT_EQ(d->find("missing"), nullptr);
}

TEST(PickleReader, CyclesAreHarmless) {
  // l = []; l.append(l): memo makes a cycle; the reader builds it without looping.
  PickleWriter w;
  w.proto(2).empty_list().binput(0).binget(0).op('a').stop();
  auto doc = must_read(w.done());
  ASSERT_TRUE(doc);
  EXPECT_EQ(pickle::items(doc->root())[0], &doc->root());
  EXPECT_EQ(pickle::describe(doc->root()), "list (1 items)");
}

// ---- numpy ----------------------------------------------------------------------------

TEST(PickleReader, NdarrayReduceAndScalar) {
  PickleWriter w;
  w.proto(2).mark();
  w.ndarray(
      {2, 2}, [](PickleWriter& p) { p.dtype("f8"); }, f8({1, 2, 3, 4}));
  w.ndarray(
      {2, 3}, [](PickleWriter& p) { p.dtype("f8"); }, f8({1, 4, 2, 5, 3, 6}), /*fortran=*/true);
  w.global("numpy.core.multiarray", "scalar").dtype("f8").bytes(f8({2.5})).tuple2().reduce();
  w.global("numpy._core.multiarray", "scalar").dtype("i8").bytes(i8({-3})).tuple2().reduce();
  w.tuple().stop();
  auto doc = must_read(w.done());
  ASSERT_TRUE(doc);
  const auto* a = at(doc->root(), 0).as<pickle::Array>();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(*pickle::array_doubles(*a, "a"), (std::vector<double>{1, 2, 3, 4}));
  const auto* f = at(doc->root(), 1).as<pickle::Array>();
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(*pickle::array_doubles(*f, "f"), (std::vector<double>{1, 2, 3, 4, 5, 6}));  // C order
  EXPECT_EQ(pickle::as_number(at(doc->root(), 2)), 2.5);
  EXPECT_EQ(pickle::as_int(at(doc->root(), 3)), -3);
}

TEST(PickleReader, JoblibWrapperPaddingOrderAndByteOrder) {
  for (int alignment : {16, 8, 0}) {
    PickleWriter w;
    w.proto(4).frame(0).mark();
    w.wrapper({3}, "f8", '<', "C", f8({1.5, -2.5, 1e300}), alignment);
    w.wrapper({2, 3}, "f8", '<', "F", f8({1, 4, 2, 5, 3, 6}), alignment);
    w.wrapper({2}, "f8", '>', "C", f8_big({7.25, -0.5}), alignment);
    w.wrapper({2}, "i8", '<', "C", i8({-1, 1234567890123}), alignment);
    w.tuple().stop();
    auto doc = must_read(w.done());
    ASSERT_TRUE(doc) << "alignment " << alignment;
    EXPECT_EQ(*pickle::array_doubles(*at(doc->root(), 0).as<pickle::Array>(), "a"),
              (std::vector<double>{1.5, -2.5, 1e300}));
    EXPECT_EQ(*pickle::array_doubles(*at(doc->root(), 1).as<pickle::Array>(), "f"),
              (std::vector<double>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(*pickle::array_doubles(*at(doc->root(), 2).as<pickle::Array>(), "b"),
              (std::vector<double>{7.25, -0.5}));
    EXPECT_EQ(*pickle::array_ints(*at(doc->root(), 3).as<pickle::Array>(), "i"),
              (std::vector<std::int64_t>{-1, 1234567890123}));
  }
}

TEST(PickleReader, JoblibObjectArrayIsANestedPickle) {
  PickleWriter w;
  w.proto(4).stack_global("joblib.numpy_pickle", "NumpyArrayWrapper").empty_tuple().newobj();
  w.empty_dict()
      .mark()
      .str("subclass")
      .stack_global("numpy", "ndarray")
      .str("shape")
      .shape_tuple({2, 1});
  w.str("order").str("C").str("dtype").dtype("O8", '|').str("allow_mmap").boolean(false);
  w.str("numpy_array_alignment_bytes").integer(16).setitems().build();
  // The nested pickle (its own memo, protocol 2): an object ndarray of two strings.
  PickleWriter inner;
  inner.proto(2)
      .global("numpy.core.multiarray", "_reconstruct")
      .binput(0)
      .global("numpy", "ndarray");
  inner.integer(0)
      .tuple1()
      .global("_codecs", "encode")
      .str("b")
      .str("latin1")
      .tuple2()
      .reduce()
      .tuple3()
      .reduce();
  inner.mark().integer(1).shape_tuple({2, 1}).dtype("O8", '|').boolean(false);
  inner.empty_list().mark().str("first").str("second").appends().tuple().build().stop();
  w.raw(inner.done());
  w.stop();  // the outer pickle resumes after the nested STOP
  auto doc = must_read(w.done());
  ASSERT_TRUE(doc);
  const auto* a = doc->root().as<pickle::Array>();
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->type().is_object());
  ASSERT_EQ(a->objects.size(), 2u);
  EXPECT_EQ(pickle::as_str(*a->objects[1]), "second");
}

// An object ndarray (protocol 2, as joblib nests it) of the elements `write_items` pushes.
std::string object_array(std::int64_t n, const std::function<void(PickleWriter&)>& write_items) {
  PickleWriter w;
  w.proto(2).global("numpy.core.multiarray", "_reconstruct").global("numpy", "ndarray");
  w.integer(0).tuple1().global("_codecs", "encode").str("b").str("latin1").tuple2().reduce();
  w.tuple3().reduce();
  w.mark().integer(1).shape_tuple({n}).dtype("O8", '|').boolean(false).empty_list().mark();
  write_items(w);
  w.appends().tuple().build().stop();
  return w.done();
}

// scikit-learn 1.1 kept KNeighborsRegressor._y as an object array of Python floats.
TEST(PickleReader, ObjectArraysOfFloatsAndIntsReadAsNumbers) {
  auto doc = must_read(object_array(3, [](PickleWriter& w) {
    w.real(1.5).integer(-7);
    // numpy.float64(0.25) as numpy pickles a scalar: scalar(dtype, bytes).
    w.global("numpy.core.multiarray", "scalar").dtype("f8");
    w.global("_codecs", "encode").str(std::string("\0\0\0\0\0\0\xc3\x90\x3f", 9)).str("latin1");
    w.tuple2().reduce().tuple2().reduce();
  }));
  ASSERT_TRUE(doc);
  const auto* a = doc->root().as<pickle::Array>();
  ASSERT_NE(a, nullptr);
  auto values = pickle::array_doubles(*a, "_y");
  ASSERT_TRUE(values.ok()) << values.status().to_string();
  EXPECT_EQ(*values, (std::vector<double>{1.5, -7.0, 0.25}));

  for (const auto& [write, named] :
       std::vector<std::pair<std::function<void(PickleWriter&)>, std::string>>{
           {[](PickleWriter& w) { w.real(1.0).str("2.0"); }, "element 1 is str '2.0'"},
           {[](PickleWriter& w) { w.real(1.0).boolean(true); }, "element 1 is bool True"},
           {[](PickleWriter& w) { w.none().real(1.0); }, "element 0 is None"}}) {
    auto bad = must_read(object_array(2, write));
    ASSERT_TRUE(bad);
    auto r = pickle::array_doubles(*bad->root().as<pickle::Array>(), "_y");
    ASSERT_FALSE(r.ok()) << named;
    EXPECT_NE(r.status().message().find("_y is an object array whose " + named),
              std::string::npos)
        << r.status().message();
  }
}

TEST(PickleReader, StructuredDtype) {
  PickleWriter w;
  w.proto(2);
  w.ndarray(
      {2},
      [](PickleWriter& p) {
        p.struct_dtype({{"left_child", "i8", 0}, {"threshold", "f8", 8}, {"flag", "u1", 16}}, 24);
      },
      i8({5}) + f8({0.25}) + std::string("\x01\0\0\0\0\0\0\0", 8) + i8({-1}) + f8({-2}) +
          std::string(8, '\0'));
  w.stop();
  auto doc = must_read(w.done());
  ASSERT_TRUE(doc);
  const auto* a = doc->root().as<pickle::Array>();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type().itemsize, 24);
  ASSERT_EQ(a->type().fields.size(), 3u);
  EXPECT_EQ(a->type().fields[1].name, "threshold");
  EXPECT_EQ(a->type().fields[1].offset, 8);
  EXPECT_EQ(*pickle::field_ints(*a, "left_child", "n"), (std::vector<std::int64_t>{5, -1}));
  EXPECT_EQ(*pickle::field_doubles(*a, "threshold", "n"), (std::vector<double>{0.25, -2}));
  EXPECT_EQ(*pickle::field_ints(*a, "flag", "n"), (std::vector<std::int64_t>{1, 0}));
  EXPECT_FALSE(pickle::field_ints(*a, "nope", "n").ok());
}

// ---- hostile input --------------------------------------------------------------------

TEST(PickleReader, ForbiddenGlobalsAreRefusedByName) {
  struct Case {
    std::string module, name;
  };
  for (const Case& c : {Case{"os", "system"}, Case{"builtins", "eval"}, Case{"subprocess", "Popen"},
                        Case{"posix", "system"}, Case{"builtins", "getattr"}, Case{"numpy", "load"},
                        Case{"sklearn.ensemble._forest", "RandomForestRegressor"}}) {
    const std::string cls = c.module + "." + c.name;
    PickleWriter g;
    g.proto(2).global(c.module, c.name).str("id").tuple1().reduce().stop();
    EXPECT_TRUE(refused(g.done(), "class " + cls + " is not allowed")) << "GLOBAL " << cls;
    PickleWriter s;
    s.proto(4).stack_global(c.module, c.name).str("id").tuple1().reduce().stop();
    EXPECT_TRUE(refused(s.done(), "class " + cls + " is not allowed")) << "STACK_GLOBAL " << cls;
  }
  // Python 2 names are mapped before the check, not around it.
  PickleWriter p2;
  p2.proto(2).global("__builtin__", "eval").stop();
  EXPECT_TRUE(refused(p2.done(), "class builtins.eval is not allowed"));
  // Allowed only when the caller says so.
  PickleWriter ok;
  ok.proto(4).stack_global("sklearn.dummy", "DummyRegressor").empty_tuple().newobj().stop();
  EXPECT_TRUE(refused(ok.done(), "class sklearn.dummy.DummyRegressor is not allowed"));
  Options opts;
  opts.allowed = sklearn_classes();
  auto doc = must_read(ok.done(), opts);
  ASSERT_TRUE(doc);
  EXPECT_EQ(doc->root().as<pickle::Object>()->qualified(), "sklearn.dummy.DummyRegressor");
}

TEST(PickleReader, CallsOnlyReadNumpyConstructorsAsData) {
  // REDUCE of something that is not a resolved class.
  PickleWriter w;
  w.proto(2).str("os.system").str("ls").tuple1().reduce().stop();
  EXPECT_TRUE(refused(w.done(), "only allowed classes can be called"));
  // APPEND to anything but a list would call a method in Python.
  PickleWriter a;
  a.proto(2).empty_dict().integer(1).op('a').stop();
  EXPECT_TRUE(refused(a.done(), "APPEND needs a list"));
  PickleWriter s;
  s.proto(2).empty_list().integer(1).integer(2).op('s').stop();
  EXPECT_TRUE(refused(s.done(), "SETITEM needs a dict"));
  PickleWriter b;
  b.proto(2).integer(1).empty_dict().build().stop();
  EXPECT_TRUE(refused(b.done(), "BUILD of int 1"));
  Options opts;
  opts.allowed = sklearn_classes();
  PickleWriter twice;
  twice.proto(4)
      .stack_global("sklearn.dummy", "DummyRegressor")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .build()
      .empty_dict()
      .build()
      .stop();
  EXPECT_TRUE(refused(twice.done(), "built twice", opts));
  PickleWriter codec;
  codec.proto(2)
      .global("_codecs", "encode")
      .str("\xe2\x82\xac")
      .str("latin1")
      .tuple2()
      .reduce()
      .stop();
  EXPECT_TRUE(refused(codec.done(), "not latin-1"));
  PickleWriter codec2;
  codec2.proto(2).global("_codecs", "encode").str("abc").str("utf-8").tuple2().reduce().stop();
  EXPECT_TRUE(refused(codec2.done(), "encode(str, 'latin1')"));
}

TEST(PickleReader, RefusesOtherFormatsAndOpcodes) {
  EXPECT_TRUE(refused("", "empty file"));
  EXPECT_TRUE(refused(std::string("\x78\x9c\x01\x02", 4), "zlib-compressed"));
  EXPECT_TRUE(refused(std::string("\x1f\x8b\x08\x00", 4), "gzip-compressed"));
  EXPECT_TRUE(refused("(lp0\n.", "not a pickle of protocol 2 or later"));
  EXPECT_TRUE(refused(std::string("\x80\x06N.", 4), "protocol 6 is not supported"));
  for (std::uint8_t op :
       {std::uint8_t{'P'}, std::uint8_t{'Q'}, std::uint8_t{0x82}, std::uint8_t{'i'},
        std::uint8_t{'o'}, std::uint8_t{0x97}, std::uint8_t{'S'}, std::uint8_t{'I'}}) {
    PickleWriter w;
    w.proto(2).none().op(op).stop();
    EXPECT_TRUE(refused(w.done(), "is not supported")) << int(op);
  }
}

TEST(PickleReader, BadMemoIndexAndStackUnderflow) {
  PickleWriter w;
  w.proto(2).binget(5).stop();
  EXPECT_TRUE(refused(w.done(), "memo index 5 was never stored"));
  PickleWriter lw;
  lw.proto(2).op('j').le(0xfffffff0, 4).stop();
  EXPECT_TRUE(refused(lw.done(), "memo index 4294967280 was never stored"));
  PickleWriter u;
  u.proto(2).op(0x86).stop();
  EXPECT_TRUE(refused(u.done(), "stack underflow"));
  PickleWriter m;
  m.proto(2).integer(1).mark().tuple2().stop();  // TUPLE2 may not reach below the MARK
  EXPECT_TRUE(refused(m.done(), "stack underflow"));
  PickleWriter nomark;
  nomark.proto(2).integer(1).tuple().stop();
  EXPECT_TRUE(refused(nomark.done(), "no MARK"));
}

TEST(PickleReader, HugeLengthsAreCheckedBeforeUse) {
  struct Case {
    std::uint8_t op;
    int width;
  };
  for (const Case& c : {Case{'X', 4}, Case{0x8d, 8}, Case{'B', 4}, Case{0x8e, 8}, Case{0x96, 8},
                        Case{0x8b, 4}, Case{0x95, 8}}) {
    PickleWriter w;
    w.proto(4)
        .op(c.op)
        .le(c.width == 8 ? ~std::uint64_t{0} >> 1 : 0xffffffffu, c.width)
        .raw("abc")
        .stop();
    EXPECT_TRUE(refused(w.done(), "truncated file")) << int(c.op);
  }
  // An array shape whose byte count overflows: refused as too large, nothing allocated.
  PickleWriter big;
  big.proto(4).wrapper({std::int64_t{1} << 40, std::int64_t{1} << 30}, "f8", '<', "C", "");
  big.stop();
  auto r = read(big.done());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kTooLarge) << r.status().to_string();
}

TEST(PickleReader, WrongArrayByteCounts) {
  // ndarray pickled with fewer bytes than shape x itemsize.
  PickleWriter w;
  w.proto(2)
      .ndarray(
          {5}, [](PickleWriter& p) { p.dtype("f8"); }, f8({1, 2, 3, 4}))
      .stop();
  EXPECT_TRUE(refused(w.done(), "needs 40 bytes, the pickle holds 32"));
  // A joblib wrapper whose data runs past the end of the file.
  PickleWriter j;
  j.proto(4).wrapper({10}, "f8", '<', "C", f8({1, 2, 3})).stop();
  EXPECT_TRUE(
      refused(j.done(), "truncated file: array of shape (10,) and dtype f8 needs 80 bytes"));
  // Padding longer than the alignment it claims.
  PickleWriter q;
  q.proto(4)
      .stack_global("joblib.numpy_pickle", "NumpyArrayWrapper")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .mark();
  q.str("subclass")
      .stack_global("numpy", "ndarray")
      .str("shape")
      .shape_tuple({1})
      .str("order")
      .str("C");
  q.str("dtype").dtype("f8").str("numpy_array_alignment_bytes").integer(4).setitems().build();
  q.le(200, 1).raw(std::string(200, '\xff')).raw(f8({1})).stop();
  EXPECT_TRUE(refused(q.done(), "array padding of 200 bytes exceeds the alignment 4"));
  // Object array: the nested pickle's shape must match the wrapper's.
  PickleWriter o;
  o.proto(4)
      .stack_global("joblib.numpy_pickle", "NumpyArrayWrapper")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .mark();
  o.str("subclass")
      .stack_global("numpy", "ndarray")
      .str("shape")
      .shape_tuple({3})
      .str("order")
      .str("C");
  o.str("dtype").dtype("O8", '|').setitems().build();
  o.proto(2)
      .ndarray(
          {1}, [](PickleWriter& x) { x.dtype("f8"); }, f8({1}))
      .stop()
      .stop();
  EXPECT_TRUE(refused(o.done(), "nested pickle of an object array holds ndarray f8"));
}

TEST(PickleReader, LimitsOnNestingStackAndMemory) {
  PickleWriter deep;
  deep.proto(2);
  for (int i = 0; i < 1000; ++i) deep.mark();
  deep.stop();
  auto r = read(deep.done());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kTooLarge);
  EXPECT_NE(r.status().message().find("MARK nesting"), std::string::npos);

  Options small;
  small.limits.max_stack = 100;
  PickleWriter wide;
  wide.proto(2);
  for (int i = 0; i < 200; ++i) wide.none();
  wide.stop();
  EXPECT_TRUE(refused(wide.done(), "value stack deeper than 100", small));

  // Memory: a list that appends the same memoized big string many times costs 8 bytes a
  // reference; a budget of (file size x 1 + 64 KB) is exceeded quickly.
  Options tight;
  tight.limits.memory_factor = 1;
  tight.limits.memory_floor = 64 * 1024;
  PickleWriter blow;
  blow.proto(2).str(std::string(200, 'x')).binput(0).op('0');
  blow.empty_list().mark();
  for (int i = 0; i < 20000; ++i) blow.binget(0);
  blow.appends().stop();
  auto m = read(blow.done(), tight);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kTooLarge);
  EXPECT_NE(m.status().message().find("bytes of memory"), std::string::npos)
      << m.status().to_string();
  EXPECT_TRUE(read(blow.done()).ok());  // within the default budget
}

TEST(PickleReader, EveryTruncationIsRefusedWithItsOffset) {
  Options opts;
  opts.allowed = sklearn_classes();
  for (const char* name : {"linear.pkl", "maxabs_p2.pkl", "gb_small.pkl", "knn.pkl"}) {
    const std::string bytes = read_file(fixtures() / name);
    ASSERT_FALSE(bytes.empty()) << name;
    ASSERT_TRUE(read(bytes, opts).ok()) << name;
    for (std::size_t n = 1; n < bytes.size(); ++n) {
      auto r = read(bytes.substr(0, n), opts);
      ASSERT_FALSE(r.ok()) << name << " cut at " << n;
      const std::string msg = r.status().message();
      EXPECT_EQ(msg.rfind("test.pkl: offset ", 0), 0u) << msg;
      EXPECT_NE(msg.find("truncated file"), std::string::npos)
          << name << " cut at " << n << ": " << msg;
    }
  }
}

TEST(PickleReader, CorruptedBytesNeverCrash) {
  // Deterministic byte flips of real files: every outcome is a value or a Status.
  std::mt19937 rng(12345);
  Options opts;
  opts.allowed = sklearn_classes();
  for (const char* name : {"gb_small.pkl", "knn.pkl", "svr_rbf.pkl", "poly2.pkl"}) {
    const std::string bytes = read_file(fixtures() / name);
    ASSERT_FALSE(bytes.empty()) << name;
    int accepted = 0;
    for (int i = 0; i < 1500; ++i) {
      std::string mutated = bytes;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        mutated[rng() % mutated.size()] = static_cast<char>(rng() & 0xff);
      }
      auto r = pickle::read_pickle(mutated, name, opts);
      if (!r.ok()) continue;
      ++accepted;
      // Converting and evaluating what converts must not crash either.
      auto stage = sklearn_stage((*r)->root(), name);
      if (!stage.ok()) continue;
      Scratch scratch;
      if (auto* reg = std::get_if<std::unique_ptr<Regressor>>(&*stage)) {
        RowMatrixD in = RowMatrixD::Constant(2, (*reg)->inputs(), 0.5);
        RowMatrixD out(2, (*reg)->outputs());
        (*reg)->predict(in, out, scratch);
      } else if (auto* tr = std::get_if<std::unique_ptr<Transform>>(&*stage)) {
        RowMatrixD in = RowMatrixD::Constant(2, (*tr)->inputs(), 0.5);
        RowMatrixD out(2, (*tr)->outputs());
        (*tr)->apply(in, out);
      }
    }
    SUCCEED() << name << ": " << accepted << " of 1500 corrupted copies still parse";
  }
}

// ---- the scikit-learn loader on crafted pickles --------------------------------------

// A GradientBoostingRegressor, init 'zero', learning_rate 1, one tree on one feature:
//   node 0: x0 <= threshold ? node 1 (value 10) : node 2 (value 20).
std::string gb_pickle(double threshold, std::int64_t left = 1, std::int64_t feature = 0,
                      int features = 1) {
  PickleWriter t;
  t.proto(2).global("sklearn.ensemble._gb", "GradientBoostingRegressor").empty_tuple().newobj();
  t.empty_dict().mark();
  t.str("learning_rate").real(1.0).str("init_").str("zero").str("n_features_in_").integer(features);
  t.str("estimators_").empty_ndarray();  // an object ndarray: its data is a list
  t.mark().integer(1).shape_tuple({1, 1}).dtype("O8", '|').boolean(false).empty_list().mark();
  // The tree.
  t.global("sklearn.tree._classes", "DecisionTreeRegressor")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .mark();
  t.str("tree_").global("sklearn.tree._tree", "Tree");
  t.integer(features);
  t.ndarray(
      {1}, [](PickleWriter& p) { p.dtype("i8"); }, i8({1}));
  t.integer(1).tuple3().reduce();
  t.empty_dict().mark().str("node_count").integer(3).str("nodes");
  t.ndarray(
      {3},
      [](PickleWriter& p) {
        p.struct_dtype({{"left_child", "i8", 0},
                        {"right_child", "i8", 8},
                        {"feature", "i8", 16},
                        {"threshold", "f8", 24}},
                       32);
      },
      i8({left, 2, feature}) + f8({threshold}) + i8({-1, -1, -2}) + f8({-2}) + i8({-1, -1, -2}) +
          f8({-2}));
  t.str("values").ndarray(
      {3, 1, 1}, [](PickleWriter& p) { p.dtype("f8"); }, f8({15, 10, 20}));
  t.setitems().build();         // Tree
  t.setitems().build();         // DecisionTreeRegressor
  t.appends().tuple().build();  // the object ndarray
  t.setitems().build().stop();
  return t.done();
}

double predict_one(const Regressor& r, double x) {
  RowMatrixD in(1, 1);
  in(0, 0) = x;
  RowMatrixD out(1, 1);
  Scratch scratch;
  r.predict(in, out, scratch);
  return out(0, 0);
}

TEST(SklearnCrafted, TreeThresholdComparesFloat32Values) {
  auto stage = load_sklearn_pickle(gb_pickle(0.1), "gb.pkl");
  ASSERT_TRUE(stage.ok()) << stage.status().to_string();
  auto* reg = std::get_if<std::unique_ptr<Regressor>>(&*stage);
  ASSERT_TRUE(reg != nullptr && *reg);
  EXPECT_EQ((*reg)->describe(), "GradientBoostingRegressor(1 trees, 3 nodes)");
  // 0.1 in float32 is 0.100000001490116..., above the float64 threshold 0.1: sklearn sends
  // it right although 0.1 <= 0.1 in float64.
  EXPECT_EQ(predict_one(**reg, 0.1), 20.0);
  const double below = static_cast<double>(std::nextafter(0.1f, 0.0f));  // 0.099999994
  EXPECT_EQ(predict_one(**reg, below), 10.0);
  EXPECT_EQ(predict_one(**reg, 0.09999999), 10.0);
  // A threshold that is itself a float32 value: equal goes left.
  auto exact = load_sklearn_pickle(gb_pickle(0.5), "gb.pkl");
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(predict_one(*std::get<std::unique_ptr<Regressor>>(*exact), 0.5), 10.0);
  EXPECT_EQ(predict_one(*std::get<std::unique_ptr<Regressor>>(*exact), 0.50000001),
            10.0);  // rounds to 0.5f
  EXPECT_EQ(predict_one(*std::get<std::unique_ptr<Regressor>>(*exact), 0.5000001), 20.0);
}

TEST(SklearnCrafted, MalformedTreesAreRefused) {
  auto backwards = load_sklearn_pickle(gb_pickle(0.1, /*left=*/0), "gb.pkl");
  ASSERT_FALSE(backwards.ok());
  EXPECT_NE(backwards.status().message().find("node 0 has children 0, 2"), std::string::npos)
      << backwards.status().to_string();
  auto feature = load_sklearn_pickle(gb_pickle(0.1, 1, /*feature=*/3), "gb.pkl");
  ASSERT_FALSE(feature.ok());
  EXPECT_NE(feature.status().message().find("splits on feature 3"), std::string::npos);
  auto nan = load_sklearn_pickle(gb_pickle(std::nan("")), "gb.pkl");
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("NaN threshold"), std::string::npos);
}

TEST(SklearnCrafted, UnsupportedEstimatorsAreRefusedByName) {
  PickleWriter rf;
  rf.proto(4)
      .stack_global("sklearn.ensemble._bagging", "BaggingRegressor")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .build()
      .stop();
  auto r = load_sklearn_pickle(rf.done(), "rf.pkl");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("rf.pkl: offset ", 0), 0u) << r.status().message();
  EXPECT_NE(r.status().message().find(
                ": class sklearn.ensemble._bagging.BaggingRegressor is not allowed: not one of "
                "the supported scikit-learn regressors"),
            std::string::npos)
      << r.status().message();
  // An allowed class that is not a model by itself.
  PickleWriter dt;
  dt.proto(4)
      .stack_global("sklearn.dummy", "DummyRegressor")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .build()
      .stop();
  auto d = load_sklearn_pickle(dt.done(), "dt.pkl");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(),
            "dt.pkl: scikit-learn estimator sklearn.dummy.DummyRegressor is not supported");
  // Not an estimator at all.
  PickleWriter n;
  n.proto(4).integer(3).stop();
  auto i = load_sklearn_pickle(n.done(), "n.pkl");
  ASSERT_FALSE(i.ok());
  EXPECT_NE(i.status().message().find("holds int 3, not a scikit-learn estimator"),
            std::string::npos);
  // A scaler with a non-finite scale.
  PickleWriter s;
  s.proto(4)
      .stack_global("sklearn.preprocessing._data", "MaxAbsScaler")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .mark();
  s.str("scale_").wrapper({2}, "f8", '<', "C", f8({1, std::numeric_limits<double>::infinity()}));
  s.setitems().build().stop();
  auto inf = load_sklearn_pickle(s.done(), "s.pkl");
  ASSERT_FALSE(inf.ok());
  EXPECT_NE(inf.status().message().find("MaxAbsScaler.scale_[1] is not finite"), std::string::npos)
      << inf.status().to_string();
  // A linear model whose intercept does not match its outputs.
  PickleWriter l;
  l.proto(4)
      .stack_global("sklearn.linear_model._base", "LinearRegression")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .mark();
  l.str("coef_").wrapper({2, 3}, "f8", '<', "C", f8({1, 2, 3, 4, 5, 6}));
  l.str("intercept_").wrapper({3}, "f8", '<', "C", f8({1, 2, 3}));
  l.setitems().build().stop();
  auto li = load_sklearn_pickle(l.done(), "l.pkl");
  ASSERT_FALSE(li.ok());
  EXPECT_NE(li.status().message().find("intercept_ has 3 values for 2 outputs"), std::string::npos)
      << li.status().to_string();
}

}  // namespace
}  // namespace estimator::models
