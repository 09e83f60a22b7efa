// The loader's machinery: reading a mapping's keys (unknown, duplicate) and
// its scalars, and the scalar conversions and ${VAR} expansion under them.
#include "config/config_loader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>

#include "config/config.h"

namespace cg {
namespace config_internal {

const char *node_kind(const YAML::Node &node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "nothing";
  return "a scalar";
}

// Core values are not secret, so errors may quote them; keep them short and on
// one line for the log.
std::string quote(std::string_view value) {
  constexpr size_t kMax = 40;
  std::string out = "'";
  for (char c : value.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
  if (value.size() > kMax) out += "...";
  return out + "'";
}

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const auto &item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void Loader::read_mapping(const YAML::Node &node, const std::string &path, int line,
                          const KeyTable &keys) const {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) fail(path, line, std::string("expected a mapping, got ") + node_kind(node));
  std::map<std::string, int, std::less<>> seen;
  for (const auto &kv : node) {
    const int key_line = config_line(kv.first);
    if (!kv.first.IsScalar()) fail(path, key_line, "expected a key name");
    const std::string &name = kv.first.Scalar();
    std::string key_path = path;
    if (!key_path.empty()) key_path += '.';
    key_path += name;
    auto [it, inserted] = seen.emplace(name, key_line);
    if (!inserted) {
      fail(key_path, key_line, "duplicate key (first at line " + std::to_string(it->second) + ")");
    }
    const KeyHandler *handler = nullptr;
    for (const auto &[known, h] : keys) {
      if (known == name) handler = &h;
    }
    if (handler == nullptr) {
      std::vector<std::string> names;
      for (const auto &[known, h] : keys) names.emplace_back(known);
      fail(key_path, key_line,
           "unknown key " + quote(name) + " (expected one of: " + join(names) + ")");
    }
    if (kv.second.IsNull()) continue;  // `key:` alone keeps the default
    (*handler)(Entry{kv.second, key_path, key_line});
  }
}

std::string Loader::scalar_text(const Entry &e, const char *expected) const {
  if (!e.value.IsScalar()) {
    fail(e.path, e.line, std::string("expected ") + expected + ", got " + node_kind(e.value));
  }
  std::string error;
  auto expanded = config_expand_env(e.value.Scalar(), &error);
  if (!expanded) fail(e.path, e.line, error);
  return *expanded;
}

std::string Loader::read_string(const Entry &e) const { return scalar_text(e, "a string"); }

bool Loader::read_bool(const Entry &e) const {
  const std::string text = scalar_text(e, "true or false");
  const std::optional<bool> v = config_parse_bool(text);
  if (!v) fail(e.path, e.line, "expected true or false, got " + quote(text));
  return *v;
}

int64_t Loader::read_int(const Entry &e, int64_t min, int64_t max) const {
  const std::string text = scalar_text(e, "an integer");
  const auto value = config_parse_int(text);
  if (value && *value >= min && *value <= max) return *value;
  std::string expected = "expected an integer";
  if (max == kInt64Max) {
    expected += " >= " + std::to_string(min);
  } else {
    expected += " in " + std::to_string(min) + ".." + std::to_string(max);
  }
  // "expected >= 1, got '99999999999999999999'" alone would read as a contradiction.
  const char *note = !value && config_is_decimal(text) ? " (out of the 64-bit range)" : "";
  fail(e.path, e.line, expected + ", got " + quote(text) + note);
}

std::string Loader::read_enum(const Entry &e,
                              std::initializer_list<std::string_view> choices) const {
  std::string text = scalar_text(e, "a string");
  std::vector<std::string> names;
  for (auto choice : choices) {
    if (choice == text) return text;
    names.emplace_back(choice);
  }
  fail(e.path, e.line, "expected one of: " + join(names) + ", got " + quote(text));
}

std::vector<std::string> Loader::read_string_list(const Entry &e) const {
  if (!e.value.IsSequence()) {
    fail(e.path, e.line, std::string("expected a list of strings, got ") + node_kind(e.value));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    const int line = config_line(item);
    out.push_back(scalar_text(
        Entry{item, e.path + "[" + std::to_string(i) + "]", line ? line : e.line}, "a string"));
  }
  return out;
}

}  // namespace config_internal

namespace {

bool is_var_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool is_var_char(char c) { return is_var_start(c) || (c >= '0' && c <= '9'); }

}  // namespace

std::optional<std::string> config_expand_env(std::string_view text, std::string *error) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text.substr(i, 3) == "$${") {  // escaped: a literal "${"
      out += "${";
      i += 3;
      continue;
    }
    if (text.substr(i, 2) != "${") {
      out += text[i++];
      continue;
    }
    const size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      if (error) *error = "unterminated '${' (write '$${' for a literal '${')";
      return std::nullopt;
    }
    const std::string_view body = text.substr(i + 2, close - i - 2);
    const size_t sep = body.find(":-");
    const std::string name(body.substr(0, sep));
    if (name.empty() || !is_var_start(name[0]) ||
        !std::all_of(name.begin(), name.end(), is_var_char)) {
      // The reference is file text, not a value from the environment.
      if (error) *error = "invalid variable reference '${" + std::string(body) + "}'";
      return std::nullopt;
    }
    const char *value = std::getenv(name.c_str());
    if (sep != std::string_view::npos) {
      // Like the shell's ${VAR:-default}: the default also replaces an empty value.
      out += (value && *value) ? std::string_view(value) : body.substr(sep + 2);
    } else if (value) {
      out += value;
    } else {
      if (error) *error = "environment variable " + name + " is not set";
      return std::nullopt;
    }
    i = close + 1;
  }
  return out;
}

bool config_is_decimal(std::string_view text) {
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) text.remove_prefix(1);
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<int64_t> config_parse_int(std::string_view text) {
  // from_chars alone would take "-5" after a stripped '+' ("+-5") and has
  // no '+' of its own, so the form is checked first.
  if (!config_is_decimal(text)) return std::nullopt;
  if (text[0] == '+') text.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<bool> config_parse_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

std::optional<double> config_parse_double(std::string_view text) {
  // One sign at most, and a digit or '.' after it: from_chars would also take
  // "-5" after a stripped '+' ("+-5"), and "inf"/"nan".
  const std::string_view body =
      !text.empty() && (text[0] == '+' || text[0] == '-') ? text.substr(1) : text;
  if (body.empty() || !((body[0] >= '0' && body[0] <= '9') || body[0] == '.')) {
    return std::nullopt;
  }
  if (text[0] == '+') text.remove_prefix(1);
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

int config_line(const YAML::Node &node) {
  if (!node.IsDefined()) return 0;  // Mark() throws on an invalid node
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : 0;
}

}  // namespace cg
