// Validation of a plugin instance's `config:` section against the schema
// the plugin declares, and the schema as help text.
//
// Plugin values may be secrets (CG_CFG_SECRET), so an error quotes a value
// only for a field that is not secret, and env expansion errors name the
// variable, never its value.
#include "config/config_schema.h"

#include <cstddef>
#include <set>
#include <utility>

namespace cg {
namespace {

// The size of cg_config_field_t in ABI 1.0 (through `max`). A plugin built
// against a later minor may send larger structs; a smaller one is broken.
constexpr size_t kFieldSizeV1_0 = offsetof(cg_config_field_t, max) + sizeof(int64_t);

// Validation stops at the first error; throwing it inside this file keeps
// the type converters free of error plumbing.
struct SchemaFailure {
  ConfigError error;
};

const char *type_name(uint32_t type) {
  switch (type) {
    case CG_CFG_STRING:
      return "string";
    case CG_CFG_INT:
      return "int";
    case CG_CFG_BOOL:
      return "bool";
    case CG_CFG_DOUBLE:
      return "double";
    case CG_CFG_STRING_LIST:
      return "string list";
    case CG_CFG_ENUM:
      return "enum";
    default:
      return nullptr;
  }
}

std::vector<std::string> split_choices(const char *choices) {
  std::vector<std::string> out;
  std::string_view rest = choices ? choices : "";
  while (!rest.empty()) {
    const size_t bar = rest.find('|');
    out.emplace_back(rest.substr(0, bar));
    if (bar == std::string_view::npos) break;
    rest.remove_prefix(bar + 1);
  }
  return out;
}

std::string join(const std::vector<std::string> &items, std::string_view sep) {
  std::string out;
  for (const auto &item : items) out += (out.empty() ? "" : std::string(sep)) + item;
  return out;
}

bool has_bounds(const cg_config_field_t &f) { return f.type == CG_CFG_INT && f.min < f.max; }

// Whether a value's text goes through ${VAR} expansion: the operator's does;
// a plugin's default is a C string the author wrote, taken literally.
enum class Expand { kEnv, kNone };

class SchemaValidator {
 public:
  SchemaValidator(std::string_view file, std::string_view prefix, int instance_line)
      : file_(file), prefix_(prefix), instance_line_(instance_line) {}

  [[noreturn]] void fail(const std::string &key, int line, std::string message) const {
    throw SchemaFailure{ConfigError{file_, line, key, std::move(message)}};
  }

  const std::string &prefix() const { return prefix_; }
  std::string path(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  // The line for an error that has none of its own: the instance's.
  int instance_line() const { return instance_line_; }

  void check_schema(std::span<const cg_config_field_t *const> fields) const;
  // Converts the operator's (or the default's) node into a value of f's type.
  PluginConfigValue convert(const cg_config_field_t &f, const YAML::Node &node,
                            const std::string &key, int line, Expand expand) const;
  PluginConfigValue parse_default(const cg_config_field_t &f) const;

 private:
  std::string scalar(const YAML::Node &node, const std::string &key, int line, const char *expected,
                     Expand expand) const;
  [[noreturn]] void bad_value(const cg_config_field_t &f, const std::string &key, int line,
                              const std::string &expected, const std::string &text,
                              std::string_view note = {}) const;
  std::string file_;
  std::string prefix_;
  int instance_line_;
};

void SchemaValidator::check_schema(std::span<const cg_config_field_t *const> fields) const {
  std::set<std::string_view> keys;
  for (size_t i = 0; i < fields.size(); ++i) {
    const cg_config_field_t *f = fields[i];
    const std::string where = "plugin schema field " + std::to_string(i);
    if (f == nullptr || f->struct_size < kFieldSizeV1_0) {
      fail(prefix_, instance_line_, where + " is malformed (struct_size too small)");
    }
    if (f->key == nullptr || *f->key == '\0') fail(prefix_, instance_line_, where + " has no key");
    if (type_name(f->type) == nullptr) {
      fail(path(f->key), instance_line_,
           "plugin schema has unknown type " + std::to_string(f->type));
    }
    if (f->type == CG_CFG_ENUM && split_choices(f->choices).empty()) {
      fail(path(f->key), instance_line_, "plugin schema declares an enum without choices");
    }
    if (!keys.insert(f->key).second) {
      fail(path(f->key), instance_line_, "plugin schema declares the key twice");
    }
  }
}

void SchemaValidator::bad_value(const cg_config_field_t &f, const std::string &key, int line,
                                const std::string &expected, const std::string &text,
                                std::string_view note) const {
  std::string message = "expected " + expected;
  if (!(f.flags & CG_CFG_SECRET)) {
    constexpr size_t kMax = 40;  // short, one line: values may hold anything
    std::string shown;
    for (char c : std::string_view(text).substr(0, kMax)) {
      shown += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
    }
    message += ", got '" + shown + (text.size() > kMax ? "...'" : "'");
  }
  fail(key, line, message.append(note));
}

std::string SchemaValidator::scalar(const YAML::Node &node, const std::string &key, int line,
                                    const char *expected, Expand expand) const {
  if (!node.IsScalar()) {
    fail(key, line,
         std::string("expected ") + expected + ", got " +
             (node.IsMap()        ? "a mapping"
              : node.IsSequence() ? "a list"
                                  : "nothing"));
  }
  if (expand == Expand::kNone) return node.Scalar();
  std::string error;
  auto text = config_expand_env(node.Scalar(), &error);
  if (!text) fail(key, line, error);  // names the variable, never a value
  return *text;
}

PluginConfigValue SchemaValidator::convert(const cg_config_field_t &f, const YAML::Node &node,
                                           const std::string &key, int line, Expand expand) const {
  PluginConfigValue v;
  v.type = f.type;
  v.secret = f.flags & CG_CFG_SECRET;
  v.present = true;
  switch (f.type) {
    case CG_CFG_STRING:
      v.str = scalar(node, key, line, "a string", expand);
      break;
    case CG_CFG_INT: {
      const std::string text = scalar(node, key, line, "an integer", expand);
      const auto i = config_parse_int(text);
      // Tells a too-large number from a typo; says nothing more of a secret.
      const std::string_view note =
          !i && config_is_decimal(text) ? " (out of the 64-bit range)" : "";
      if (has_bounds(f) && (!i || *i < f.min || *i > f.max)) {
        bad_value(f, key, line,
                  "an integer in " + std::to_string(f.min) + ".." + std::to_string(f.max), text,
                  note);
      }
      if (!i) bad_value(f, key, line, "an integer", text, note);
      v.i = *i;
      break;
    }
    case CG_CFG_BOOL: {
      const std::string text = scalar(node, key, line, "true or false", expand);
      const auto b = config_parse_bool(text);
      if (!b) bad_value(f, key, line, "true or false", text);
      v.b = *b;
      break;
    }
    case CG_CFG_DOUBLE: {
      const std::string text = scalar(node, key, line, "a number", expand);
      const auto d = config_parse_double(text);
      if (!d) bad_value(f, key, line, "a number", text);
      v.d = *d;
      break;
    }
    case CG_CFG_STRING_LIST:
      if (!node.IsSequence()) {
        fail(key, line, "expected a list of strings (write [a, b] or one '- item' a line)");
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const YAML::Node item = node[i];
        const int item_line = config_line(item) ? config_line(item) : line;
        v.list.push_back(
            scalar(item, key + "[" + std::to_string(i) + "]", item_line, "a string", expand));
      }
      break;
    case CG_CFG_ENUM: {
      const auto choices = split_choices(f.choices);
      v.str = scalar(node, key, line, "a string", expand);
      bool ok = false;
      for (const auto &c : choices) ok = ok || c == v.str;
      if (!ok) bad_value(f, key, line, "one of: " + join(choices, ", "), v.str);
      break;
    }
  }
  return v;
}

PluginConfigValue SchemaValidator::parse_default(const cg_config_field_t &f) const {
  const std::string key = path(f.key);
  // A scalar default is taken as written: plugin authors write C strings, and
  // YAML rules would turn "#general" into a comment or "" into null, as
  // ${VAR} expansion would turn "${" into an error. Only a list needs YAML
  // ("[a, b]"). A broken default is the plugin's fault, found at this
  // instance, so errors name the instance's line.
  YAML::Node node(std::string(f.default_value));
  if (f.type == CG_CFG_STRING_LIST) {
    try {
      std::vector<YAML::Node> docs;
      if (config_yaml_load(f.default_value, "", &docs) || docs.size() != 1) {
        fail(key, instance_line_, "the plugin's default is not a YAML list (a plugin bug)");
      }
      node = docs[0];
    } catch (const YAML::Exception &) {
      fail(key, instance_line_, "the plugin's default is not a YAML list (a plugin bug)");
    }
  }
  try {
    return convert(f, node, key, instance_line_, Expand::kNone);
  } catch (const SchemaFailure &e) {
    fail(key, instance_line_, "the plugin's default is invalid (a plugin bug): " + e.error.message);
  }
}

const cg_config_field_t *find_field(std::span<const cg_config_field_t *const> fields,
                                    std::string_view key) {
  for (const cg_config_field_t *f : fields) {
    if (key == f->key) return f;
  }
  return nullptr;
}

std::string unknown_key_message(std::span<const cg_config_field_t *const> fields,
                                std::string_view key) {
  std::vector<std::string> names;
  for (const cg_config_field_t *f : fields) names.emplace_back(f->key);
  const std::string expected =
      names.empty() ? "this plugin takes no config" : "expected one of: " + join(names, ", ");
  return "unknown key '" + std::string(key) + "' (" + expected + ")";
}

// The operator's values, keyed by schema key. Unknown and duplicate keys fail.
void read_given(const SchemaValidator &sv, const YAML::Node &section,
                std::span<const cg_config_field_t *const> fields,
                std::map<std::string, PluginConfigValue, std::less<>> &values) {
  if (!section.IsDefined() || section.IsNull()) return;
  if (!section.IsMap()) {
    sv.fail(sv.prefix(), config_line(section), "expected a mapping of config keys");
  }
  std::map<std::string, int, std::less<>> seen;
  for (const auto &kv : section) {
    const int line = config_line(kv.first);
    if (!kv.first.IsScalar()) sv.fail(sv.prefix(), line, "expected a key name");
    const std::string &name = kv.first.Scalar();
    const std::string key = sv.path(name);
    const cg_config_field_t *f = find_field(fields, name);
    if (f == nullptr) sv.fail(key, line, unknown_key_message(fields, name));
    auto [it, inserted] = seen.emplace(name, line);
    if (!inserted) {
      sv.fail(key, line, "duplicate key (first at line " + std::to_string(it->second) + ")");
    }
    if (kv.second.IsNull()) continue;  // `key:` alone: as if not given
    values[name] = sv.convert(*f, kv.second, key, line, Expand::kEnv);
  }
}

}  // namespace

const PluginConfigValue *PluginConfig::find(std::string_view key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

std::optional<ConfigError> plugin_config_validate(const YAML::Node &section,
                                                  std::span<const cg_config_field_t *const> fields,
                                                  std::string_view file,
                                                  std::string_view key_prefix, PluginConfig *out,
                                                  int instance_line) {
  SchemaValidator sv(file, key_prefix, instance_line);
  std::map<std::string, PluginConfigValue, std::less<>> values;
  try {
    sv.check_schema(fields);
    read_given(sv, section, fields, values);
    for (const cg_config_field_t *f : fields) {
      if (values.count(f->key)) continue;
      if (f->default_value != nullptr) {
        values[f->key] = sv.parse_default(*f);
      } else if (f->flags & CG_CFG_REQUIRED) {
        // The mapping's line; a null section's mark points past it, and an
        // absent one has none, so then the instance's.
        const int line = section.IsMap() ? config_line(section) : 0;
        sv.fail(sv.path(f->key), line > 0 ? line : sv.instance_line(), "required key missing");
      } else {  // absent: the plugin's config_* getters answer CG_ENOENT
        PluginConfigValue absent;
        absent.type = f->type;
        absent.secret = f->flags & CG_CFG_SECRET;
        values[f->key] = absent;
      }
    }
  } catch (const SchemaFailure &e) {
    return e.error;
  }
  out->values_ = std::move(values);
  return std::nullopt;
}

std::string plugin_config_help(std::span<const cg_config_field_t *const> fields) {
  std::string out;  // empty for a plugin without config keys
  for (const cg_config_field_t *f : fields) {
    if (f == nullptr || f->key == nullptr) continue;
    const char *type = type_name(f->type);
    std::string line = "  " + std::string(f->key) + " (" + (type ? type : "unknown");
    if (has_bounds(*f)) line += " " + std::to_string(f->min) + ".." + std::to_string(f->max);
    if (f->type == CG_CFG_ENUM && f->choices) line += " " + std::string(f->choices);
    if (f->flags & CG_CFG_REQUIRED) line += ", required";
    if (f->flags & CG_CFG_SECRET) line += ", secret";
    if (f->default_value && !(f->flags & CG_CFG_SECRET)) {
      line += ", default " + (*f->default_value ? std::string(f->default_value) : "\"\"");
    }
    line += ")";
    if (f->description && *f->description) line += ": " + std::string(f->description);
    out += line + "\n";
  }
  return out;
}

}  // namespace cg
