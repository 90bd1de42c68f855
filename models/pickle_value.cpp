// SPDX-License-Identifier: Apache-2.0
#include "models/pickle_value.h"

#include "models/pickle_numpy.h"
#include "models/shape_text.h"

namespace estimator::models::pickle {

const Value* Dict::find(std::string_view key) const {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    const Str* s = it->first->as<Str>();
    if (s != nullptr && s->text == key) return it->second;
  }
  return nullptr;
}

const Value* Object::attr(std::string_view key) const {
  if (state == nullptr) return nullptr;
  if (const Dict* d = state->as<Dict>()) return d->find(key);
  if (const Tuple* t = state->as<Tuple>(); t != nullptr && t->items.size() == 2) {
    for (const Value* part : t->items) {
      if (const Dict* d = part->as<Dict>()) {
        if (const Value* v = d->find(key)) return v;
      }
    }
  }
  return nullptr;
}

const DtypeField* Dtype::field(std::string_view name) const {
  for (const DtypeField& f : fields) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::int64_t Array::count() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

const Dtype& Array::type() const { return *dtype->as<Dtype>(); }

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kBigInt:
      return "int (over 64 bits)";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "class";
    case Kind::kObject:
      return "object";
    case Kind::kDtype:
      return "dtype";
    case Kind::kArray:
      return "ndarray";
  }
  return "?";
}

std::string dtype_text(const Dtype& d) {
  std::string s;
  if (d.byteorder == '>') s += '>';
  s += d.kind;
  s += std::to_string(d.itemsize);
  if (!d.fields.empty()) s += "{" + std::to_string(d.fields.size()) + " fields}";
  return s;
}

namespace {

std::string array_text(const Array& a) {
  if (!a.built) return "ndarray (never built)";
  return "ndarray " + dtype_text(a.type()) + " " + shape_text(a.shape);
}

}  // namespace

std::optional<std::int64_t> as_int(const Value& v) {
  if (const auto* i = v.as<std::int64_t>()) return *i;
  if (const auto* b = v.as<bool>()) return *b ? 1 : 0;
  if (const Array* a = numeric_scalar(v)) return scalar_int(*a);
  return std::nullopt;
}

std::optional<double> as_number(const Value& v) {
  if (const auto* f = v.as<double>()) return *f;
  if (const auto* i = v.as<std::int64_t>()) return static_cast<double>(*i);
  if (const auto* b = v.as<bool>()) return *b ? 1.0 : 0.0;
  if (const Array* a = numeric_scalar(v)) return scalar_double(*a);
  return std::nullopt;
}

std::optional<bool> as_bool(const Value& v) {
  if (const auto* b = v.as<bool>()) return *b;
  if (const Array* a = numeric_scalar(v); a != nullptr && a->type().kind == 'b')
    return a->data[0] != 0;
  return std::nullopt;
}

std::optional<std::string_view> as_str(const Value& v) {
  if (const Str* s = v.as<Str>()) return std::string_view(s->text);
  return std::nullopt;
}

std::span<Value* const> items(const Value& v) {
  if (const List* l = v.as<List>()) return l->items;
  if (const Tuple* t = v.as<Tuple>()) return t->items;
  return {};
}

std::string describe(const Value& v) {
  switch (v.kind()) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return std::string("bool ") + (*v.as<bool>() ? "True" : "False");
    case Kind::kInt:
      return "int " + std::to_string(*v.as<std::int64_t>());
    case Kind::kFloat:
      return "float " + std::to_string(*v.as<double>());
    case Kind::kStr: {
      const std::string& t = v.as<Str>()->text;
      return "str '" + (t.size() > 40 ? t.substr(0, 40) + "..." : t) + "'";
    }
    case Kind::kBytes:
      return "bytes (" + std::to_string(v.as<Bytes>()->data.size()) + ")";
    case Kind::kList:
      return "list (" + std::to_string(v.as<List>()->items.size()) + " items)";
    case Kind::kTuple:
      return "tuple (" + std::to_string(v.as<Tuple>()->items.size()) + " items)";
    case Kind::kDict:
      return "dict (" + std::to_string(v.as<Dict>()->entries.size()) + " items)";
    case Kind::kGlobal:
      return "class " + v.as<Global>()->qualified();
    case Kind::kObject:
      return "object " + v.as<Object>()->qualified();
    case Kind::kDtype:
      return "dtype " + dtype_text(*v.as<Dtype>());
    case Kind::kArray:
      return array_text(*v.as<Array>());
    case Kind::kBigInt:
      return "int (over 64 bits)";
  }
  return "?";
}

}  // namespace estimator::models::pickle
