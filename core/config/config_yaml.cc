// Reading YAML text from outside (the config file, plugins' list defaults)
// without handing it to yaml-cpp's own parser.
//
// Why: yaml-cpp 0.7 (Debian 12's) loops and allocates without end on some
// malformed documents: a ',' where a document's root starts, a '?' line
// after a tagged scalar, a lone CR (found by tests/fuzz/fuzz_config; each
// fix of one input let the fuzzer find the next). So libyaml, a separate
// and widely fuzzed parser, reads the text, and its events are written
// again as a small canonical YAML: flow collections, double-quoted
// scalars, '~' for null, anchors and aliases, each node on the line it
// had. That is the only text yaml-cpp parses, so the config loader keeps
// its YAML::Node tree and its line numbers, and yaml-cpp never meets the
// grammar corners it mishandles.
#include <yaml.h>

#include <algorithm>
#include <string>
#include <vector>

#include "base/json.h"
#include "config/config.h"

namespace cg {
namespace {

// Line ends as every YAML reader sees them: CRLF becomes LF; a lone CR and
// the Unicode separators U+0085, U+2028, U+2029 (line breaks to YAML 1.1,
// not to 1.2) are errors with their line.
std::optional<ConfigError> normalize(std::string_view yaml, const std::string &file,
                                     std::string *out) {
  out->clear();
  out->reserve(yaml.size());
  int line = 1;
  for (size_t i = 0; i < yaml.size(); ++i) {
    const char c = yaml[i];
    if (c == '\r') {
      if (i + 1 < yaml.size() && yaml[i + 1] == '\n') continue;  // CRLF: the LF follows
      return ConfigError{file, line, "",
                         "a carriage return without a line feed; save the file with Unix (LF) "
                         "or Windows (CRLF) line ends"};
    }
    const bool nel = c == '\xc2' && i + 1 < yaml.size() && yaml[i + 1] == '\x85';
    const bool ls_ps = c == '\xe2' && i + 2 < yaml.size() && yaml[i + 1] == '\x80' &&
                       (yaml[i + 2] == '\xa8' || yaml[i + 2] == '\xa9');
    if (nel || ls_ps) {
      return ConfigError{file, line, "",
                         "a Unicode line or paragraph separator (U+0085, U+2028, U+2029); YAML "
                         "readers disagree on them, so write a plain line break or a \\u escape"};
    }
    if (c == '\n') ++line;
    out->push_back(c);
  }
  return std::nullopt;
}

ConfigError parser_error(const yaml_parser_t &parser, std::string_view text,
                         const std::string &file) {
  // A reader error (bad encoding, control characters) has an offset, not a
  // mark.
  int line = static_cast<int>(parser.problem_mark.line) + 1;
  size_t column = parser.problem_mark.column + 1;
  if (parser.error == YAML_READER_ERROR) {
    const std::string_view before = text.substr(0, std::min(parser.problem_offset, text.size()));
    line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    const size_t nl = before.rfind('\n');
    column = before.size() - (nl == std::string_view::npos ? 0 : nl + 1) + 1;
  }
  std::string what = parser.problem != nullptr ? parser.problem : "malformed YAML";
  if (parser.context != nullptr) what = std::string(parser.context) + ": " + what;
  return ConfigError{file, line, "",
                     "invalid YAML: " + what + " (column " + std::to_string(column) + ")"};
}

bool is_null_plain(std::string_view v) {
  return v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL";
}

// Writes the canonical form of libyaml's events.
class Canonical {
 public:
  Canonical(std::string *out, const std::string &file) : out_(*out), file_(file) {}

  // Returns an error for what the canonical form does not carry.
  std::optional<ConfigError> on(const yaml_event_t &ev) {
    const int line = static_cast<int>(ev.start_mark.line) + 1;
    switch (ev.type) {
      case YAML_DOCUMENT_START_EVENT:
        ++documents_;  // a second one is refused at its first node, named by its line
        return std::nullopt;
      case YAML_DOCUMENT_END_EVENT:
        if (documents_ > 1) return ConfigError{file_, line, "", "expected one YAML document"};
        return std::nullopt;
      case YAML_SCALAR_EVENT: {
        const std::string_view v(reinterpret_cast<const char *>(ev.data.scalar.value),
                                 ev.data.scalar.length);
        if (auto err = begin_node(line, false)) return err;
        anchor(ev.data.scalar.anchor);
        if (ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_plain(v)) {
          out_ += '~';
        } else {
          // JSON's string escapes are YAML's double-quoted ones; libyaml
          // has checked the UTF-8 already.
          json_append_string(out_, v);
        }
        end_node();
        return std::nullopt;
      }
      case YAML_ALIAS_EVENT:
        if (auto err = begin_node(line, true)) return err;
        out_ += '*';
        out_ += reinterpret_cast<const char *>(ev.data.alias.anchor);
        end_node();
        return std::nullopt;
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        const bool map = ev.type == YAML_MAPPING_START_EVENT;
        if (auto err = begin_node(line, true)) return err;
        anchor(map ? ev.data.mapping_start.anchor : ev.data.sequence_start.anchor);
        out_ += map ? '{' : '[';
        stack_.push_back({map, 0});
        return std::nullopt;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        out_ += ev.type == YAML_SEQUENCE_END_EVENT ? ']' : '}';
        stack_.pop_back();
        end_node();
        return std::nullopt;
      default:
        return std::nullopt;
    }
  }

 private:
  struct Level {
    bool map;
    size_t items;  // nodes written so far: keys and values for a map
  };

  // Separator, then line breaks until the node's own line.
  std::optional<ConfigError> begin_node(int line, bool complex) {
    if (documents_ > 1) return ConfigError{file_, line, "", "expected one YAML document"};
    if (!stack_.empty()) {
      const Level &l = stack_.back();
      const bool key = l.map && l.items % 2 == 0;
      if (key && complex) {
        return ConfigError{file_, line, "", "a mapping key must be a scalar (a name)"};
      }
      if (l.items > 0) out_ += key || !l.map ? ", " : "";
      if (l.map && !key) out_ += ": ";
    }
    while (line_ < line) {
      out_ += "\n ";
      ++line_;
    }
    return std::nullopt;
  }

  void end_node() {
    if (!stack_.empty()) ++stack_.back().items;
  }

  void anchor(const yaml_char_t *name) {
    if (name == nullptr) return;
    out_ += '&';
    out_ += reinterpret_cast<const char *>(name);
    out_ += ' ';
  }

  std::string &out_;
  const std::string &file_;
  std::vector<Level> stack_;
  int line_ = 1;
  int documents_ = 0;
};

}  // namespace

std::optional<ConfigError> config_yaml_load(std::string_view yaml, const std::string &file,
                                            std::vector<YAML::Node> *docs) {
  std::string text;
  if (auto err = normalize(yaml, file, &text)) return err;
  yaml_parser_t parser;
  if (yaml_parser_initialize(&parser) == 0) {
    return ConfigError{file, 0, "", "cannot start the YAML parser (out of memory)"};
  }
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char *>(text.data()),
                               text.size());
  std::string canonical;
  canonical.reserve(text.size() + text.size() / 4);
  Canonical writer(&canonical, file);
  std::optional<ConfigError> err;
  for (bool done = false; !done && !err;) {
    yaml_event_t event;
    if (yaml_parser_parse(&parser, &event) == 0) {
      err = parser_error(parser, text, file);
      break;
    }
    err = writer.on(event);
    done = event.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&event);
  }
  yaml_parser_delete(&parser);
  if (err) return err;
  *docs = YAML::LoadAll(canonical);  // may throw YAML::Exception (aliases, depth)
  return std::nullopt;
}

}  // namespace cg
