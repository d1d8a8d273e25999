#include "eval/html_report.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "io/atomic_file.h"

namespace p2dpo::eval {
namespace {

constexpr const char* kCss = R"css(
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d9dce1; --zebra: #f6f7f9; --accent: #0b57d0;
        --good: #137333; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; font-size: 15px; }
header.top { max-width: 1200px; margin: 0 auto; padding: 20px 24px 4px; }
header.top h1 { margin: 0 0 4px; font-size: 26px; }
header.top p { margin: 2px 0; color: var(--muted); }
nav.toc { position: sticky; top: 0; z-index: 10; background: rgba(255,255,255,0.97); border-bottom: 1px solid var(--line);
          padding: 8px 24px; display: flex; flex-wrap: wrap; gap: 4px 14px; justify-content: center; font-size: 13.5px; }
nav.toc a { color: var(--accent); text-decoration: none; white-space: nowrap; }
nav.toc a:hover { text-decoration: underline; }
main { max-width: 1200px; margin: 0 auto; padding: 0 24px 40px; }
section { padding-top: 12px; scroll-margin-top: 56px; }
section h2 { font-size: 20px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin: 18px 0 10px; }
p { margin: 6px 0 10px; }
.table-wrap { overflow-x: auto; margin: 8px 0 18px; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 40%; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; }
th { background: #eef1f5; font-weight: 600; text-align: center; }
th.row, td.row { text-align: left; white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { text-align: left; }
td.best { font-weight: 700; }
.delta { display: block; font-size: 11px; line-height: 1.1; color: var(--muted); }
.delta.good { color: var(--good); }
.delta.bad { color: var(--bad); }
.note { color: var(--muted); font-size: 13px; }
figure.chart-fig { display: inline-block; vertical-align: top; margin: 8px 14px 14px 0; max-width: 100%; }
svg.chart { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
figure.sample { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 10px; display: flex; gap: 12px; }
figure.sample img { width: 200px; height: auto; image-rendering: pixelated; border: 1px solid var(--line); align-self: flex-start; }
figure.sample figcaption { font-weight: 600; margin-bottom: 4px; }
figure.sample dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; font-size: 13px; }
figure.sample dt { color: var(--muted); }
figure.sample dd { margin: 0; }
details { margin: 6px 0; border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; }
details summary { cursor: pointer; font-weight: 600; }
pre { font-size: 12px; overflow-x: auto; background: var(--zebra); padding: 8px; border-radius: 4px; }
footer { max-width: 1200px; margin: 0 auto; padding: 10px 24px 30px; color: var(--muted); font-size: 12.5px; }
)css";

std::string decimals_for(Format f, double v) {
  switch (f) {
    case Format::Percent: return fmt::format("{:.2f}", v * 100);
    case Format::Fixed1: return fmt::format("{:.1f}", v);
    case Format::Fixed2: return fmt::format("{:.2f}", v);
    case Format::Fixed3: return fmt::format("{:.3f}", v);
    case Format::Integer: return fmt::format("{:.0f}", v);
    case Format::Auto:
    default:
      if (std::abs(v) < 1e15 && v == std::floor(v)) return fmt::format("{:.0f}", v);
      return fmt::format("{:.4g}", v);
  }
}

std::string render_cell(const Cell& c, const Column& column) {
  Column col = column;
  if (c.format) col.format = *c.format;
  if (!c.value) return fmt::format("<td class=\"text\">{}</td>", html_escape(c.text));
  std::string s = fmt::format("<td class=\"num{}\">{}", c.best ? " best" : "", html_escape(format_value(*c.value, col.format)));
  if (c.delta) {
    const double d = *c.delta;
    std::string mag = col.format == Format::Auto ? fmt::format("{:.3g}", std::abs(d))
                                                 : decimals_for(col.format, std::abs(d));
    const char* arrow = d > 0 ? "▲" : d < 0 ? "▼" : "=";
    const char* cls = c.delta_sign > 0 ? " good" : c.delta_sign < 0 ? " bad" : "";
    s += fmt::format("<span class=\"delta{}\" title=\"change vs base\">{}{}</span>", cls, arrow,
                     d == 0 ? "" : html_escape(mag));
  }
  return s + "</td>";
}

std::string render_table(const Table& t) {
  std::string s = fmt::format("<div class=\"table-wrap\"><table id=\"{}\">\n<caption>{}</caption>\n<thead>\n",
                              html_escape(t.id), html_escape(t.caption));
  bool grouped = false;
  for (const auto& c : t.columns) grouped = grouped || !c.group.empty();
  auto th = [](const Column& c, const std::string& extra) {
    const std::string title = c.title.empty() ? "" : fmt::format(" title=\"{}\"", html_escape(c.title));
    const char* dir = c.better == Better::Higher ? " ↑" : c.better == Better::Lower ? " ↓" : "";
    return fmt::format("<th scope=\"col\"{}{}>{}{}</th>", extra, title, html_escape(c.name), dir);
  };
  if (grouped) {
    s += fmt::format("<tr><th scope=\"col\" class=\"row\" rowspan=\"2\">{}</th>", html_escape(t.row_header));
    for (size_t i = 0; i < t.columns.size();) {
      const std::string& g = t.columns[i].group;
      if (g.empty()) {
        s += th(t.columns[i], " rowspan=\"2\"");
        ++i;
        continue;
      }
      size_t j = i;
      while (j < t.columns.size() && t.columns[j].group == g) ++j;
      s += fmt::format("<th scope=\"colgroup\" colspan=\"{}\">{}</th>", j - i, html_escape(g));
      i = j;
    }
    s += "</tr>\n<tr>";
    for (const auto& c : t.columns)
      if (!c.group.empty()) s += th(c, "");
    s += "</tr>\n";
  } else {
    s += fmt::format("<tr><th scope=\"col\" class=\"row\">{}</th>", html_escape(t.row_header));
    for (const auto& c : t.columns) s += th(c, "");
    s += "</tr>\n";
  }
  s += "</thead>\n<tbody>\n";
  for (const auto& r : t.rows) {
    s += fmt::format("<tr><th scope=\"row\" class=\"row\">{}</th>", html_escape(r.label));
    for (size_t i = 0; i < t.columns.size() && i < r.cells.size(); ++i) s += render_cell(r.cells[i], t.columns[i]);
    s += "</tr>\n";
  }
  s += "</tbody>\n</table>";
  if (!t.note.empty()) s += fmt::format("<p class=\"note\">{}</p>", html_escape(t.note));
  return s + "</div>\n";
}

std::string render_sample(const SampleFigure& f) {
  std::string s = "<figure class=\"sample\">";
  s += fmt::format("<img src=\"data:image/png;base64,{}\" alt=\"{}\">", base64_encode(f.png),
                   html_escape("attention heat-map with crop box: " + f.caption));
  s += fmt::format("<div><figcaption>{}</figcaption><dl>", html_escape(f.caption));
  for (const auto& [k, v] : f.facts) s += fmt::format("<dt>{}</dt><dd>{}</dd>", html_escape(k), html_escape(v));
  return s + "</dl></div></figure>\n";
}

}  // namespace

std::string base64_encode(const std::string& bytes) {
  static const char* const kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string format_value(double v, Format f) {
  if (!std::isfinite(v)) return "–";
  std::string s = decimals_for(f, v);
  if (s.rfind("-", 0) == 0 && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);  // no "-0.00"
  return s;
}

std::string render_report_html(const ReportModel& m) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src "
       "'unsafe-inline'\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += fmt::format("<meta name=\"generator\" content=\"p2dpo report\">\n<title>{}</title>\n", html_escape(m.title));
  h += fmt::format("<style>{}</style>\n</head>\n<body>\n", kCss);
  h += fmt::format("<header class=\"top\"><h1>{}</h1>", html_escape(m.title));
  for (const auto& r : m.runs) h += fmt::format("<p>run {}</p>", html_escape(r));
  h += "</header>\n<nav class=\"toc\" id=\"toc\" aria-label=\"sections\">";
  for (const auto& s : m.sections)
    h += fmt::format("<a href=\"#{}\">{}</a>", html_escape(s.id), html_escape(s.title));
  h += "</nav>\n<main>\n";
  for (const auto& s : m.sections) {
    h += fmt::format("<section id=\"{}\">\n<h2>{}</h2>\n", html_escape(s.id), html_escape(s.title));
    bool in_samples = false;
    for (const auto& b : s.blocks) {
      const bool sample = b.kind == Block::Kind::Sample;
      if (sample && !in_samples) h += "<div class=\"samples\">\n";
      if (!sample && in_samples) h += "</div>\n";
      in_samples = sample;
      switch (b.kind) {
        case Block::Kind::Paragraph: h += fmt::format("<p>{}</p>\n", html_escape(b.text)); break;
        case Block::Kind::TableBlock: h += render_table(b.table); break;
        case Block::Kind::Line: h += "<figure class=\"chart-fig\">" + render_line_chart(b.line) + "</figure>\n"; break;
        case Block::Kind::Bar: h += "<figure class=\"chart-fig\">" + render_bar_chart(b.bar) + "</figure>\n"; break;
        case Block::Kind::Sample: h += render_sample(b.sample); break;
        case Block::Kind::Details:
          h += fmt::format("<details><summary>{}</summary><pre>{}</pre></details>\n", html_escape(b.text),
                           html_escape(b.pre));
          break;
      }
    }
    if (in_samples) h += "</div>\n";
    h += "</section>\n";
  }
  h += "</main>\n<footer>Generated by <code>p2dpo report</code>: one self-contained file (inline SVG charts, "
       "embedded PNGs, no scripts, no network).</footer>\n</body>\n</html>\n";
  return h;
}

ReportModel write_report(const std::vector<std::string>& run_paths, const std::string& out_path,
                         const std::string& title, const DiscoverOptions& opts) {
  const ReportInputs inputs = discover_report_inputs(run_paths, opts);
  ReportModel model = build_report_model(inputs, title);
  io::write_file_atomic(out_path, render_report_html(model));
  return model;
}

}  // namespace p2dpo::eval
