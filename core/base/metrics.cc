#include "base/metrics.h"

#include <fmt/format.h>

namespace cg {

void Histogram::observe(double v) {
  for (size_t i = 0; i < kBounds.size(); i++) {
    if (v <= kBounds[i]) buckets[i]++;
  }
  count++;
  sum += v;
}

bool Metrics::valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); i++) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Accepts `k="v",k2="v2"` with escaped quotes inside values; no braces.
bool Metrics::valid_labels(std::string_view labels) {
  size_t i = 0;
  while (i < labels.size()) {
    const size_t eq = labels.find('=', i);
    if (eq == std::string_view::npos || !valid_name(labels.substr(i, eq - i))) return false;
    if (eq + 1 >= labels.size() || labels[eq + 1] != '"') return false;
    size_t j = eq + 2;
    while (j < labels.size() && labels[j] != '"') j += labels[j] == '\\' ? 2 : 1;
    if (j >= labels.size()) return false;
    i = j + 1;
    if (i < labels.size()) {
      if (labels[i] != ',') return false;
      i++;
    }
  }
  return true;
}

Metrics::Family *Metrics::family(std::string_view name, Type type, std::string_view help) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    if (!valid_name(name)) return nullptr;
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}}).first;
  }
  return it->second.type == type ? &it->second : nullptr;
}

double *Metrics::counter(std::string_view name, std::string_view labels, std::string_view help) {
  Family *f = family(name, Type::kCounter, help);
  if (f == nullptr || !valid_labels(labels)) return nullptr;
  auto it = f->values.find(labels);
  if (it == f->values.end()) {
    it = f->values.emplace(std::string(labels), std::make_unique<double>(0)).first;
  }
  return it->second.get();
}

double *Metrics::gauge(std::string_view name, std::string_view labels, std::string_view help) {
  Family *f = family(name, Type::kGauge, help);
  if (f == nullptr || !valid_labels(labels)) return nullptr;
  auto it = f->values.find(labels);
  if (it == f->values.end()) {
    it = f->values.emplace(std::string(labels), std::make_unique<double>(0)).first;
  }
  return it->second.get();
}

Histogram *Metrics::histogram(std::string_view name, std::string_view labels,
                              std::string_view help) {
  Family *f = family(name, Type::kHistogram, help);
  if (f == nullptr || !valid_labels(labels)) return nullptr;
  auto it = f->histograms.find(labels);
  if (it == f->histograms.end()) {
    it = f->histograms.emplace(std::string(labels), std::make_unique<Histogram>()).first;
  }
  return it->second.get();
}

void Metrics::each_value(std::string_view name,
                         const std::function<void(std::string_view, double)> &fn) const {
  auto it = families_.find(name);
  if (it == families_.end()) return;
  for (const auto &[labels, v] : it->second.values) fn(labels, *v);
}

void Metrics::each_histogram(
    std::string_view name,
    const std::function<void(std::string_view, const Histogram &)> &fn) const {
  auto it = families_.find(name);
  if (it == families_.end()) return;
  for (const auto &[labels, h] : it->second.histograms) fn(labels, *h);
}

std::string Metrics::render() const {
  std::string out;
  auto braces = [](std::string_view labels, std::string_view extra = {}) {
    if (labels.empty() && extra.empty()) return std::string();
    std::string s = "{";
    s += labels;
    if (!labels.empty() && !extra.empty()) s += ',';
    s += extra;
    s += '}';
    return s;
  };
  for (const auto &[name, f] : families_) {
    const char *type = f.type == Type::kCounter ? "counter"
                       : f.type == Type::kGauge ? "gauge"
                                                : "histogram";
    if (!f.help.empty()) out += fmt::format("# HELP {} {}\n", name, f.help);
    out += fmt::format("# TYPE {} {}\n", name, type);
    for (const auto &[labels, v] : f.values) {
      out += fmt::format("{}{} {}\n", name, braces(labels), *v);
    }
    for (const auto &[labels, h] : f.histograms) {
      for (size_t i = 0; i < Histogram::kBounds.size(); i++) {
        out += fmt::format("{}_bucket{} {}\n", name,
                           braces(labels, fmt::format("le=\"{}\"", Histogram::kBounds[i])),
                           h->buckets[i]);
      }
      out += fmt::format("{}_bucket{} {}\n", name, braces(labels, "le=\"+Inf\""), h->count);
      out += fmt::format("{}_sum{} {}\n", name, braces(labels), h->sum);
      out += fmt::format("{}_count{} {}\n", name, braces(labels), h->count);
    }
  }
  return out;
}

}  // namespace cg
