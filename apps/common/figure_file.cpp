// figure_file.cpp: figures.json written and read back (see figure_file.h), and every figure drawn.
#include "apps/common/figure_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "apps/common/accuracy.h"
#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "kernels/common/error.h"

namespace nimbus::plot {

namespace {

namespace fs = std::filesystem;
using json::Value;

bool plain_name(const std::string& s) {
  if (s.empty() || s.size() > 200 || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  NIMBUS_CHECK(f.good(), path, ": cannot open (no figures.json: was the run made by cloud_impact?)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Value strings(const std::vector<std::string>& v) {
  std::vector<Value> items;
  for (const std::string& s : v) items.push_back(json::string(s));
  return json::array(std::move(items));
}

Value spec_json(const LineChart& s) {
  std::vector<Value> series;
  for (const Series& x : s.series)
    series.push_back(json::object({{"name", json::string(x.name)}, {"x", json::numbers(x.x)}, {"y", json::numbers(x.y)}}));
  return json::object({{"kind", json::string("line")}, {"title", json::string(s.title)},
                       {"x_label", json::string(s.x_label)}, {"y_label", json::string(s.y_label)},
                       {"y_min", json::number(s.y_min)}, {"y_max", json::number(s.y_max)},
                       {"width", json::number(s.width)}, {"height", json::number(s.height)},
                       {"series", json::array(std::move(series))}});
}

Value spec_json(const BarChart& s) {
  std::vector<Value> groups;
  for (const BarGroup& g : s.groups)
    groups.push_back(json::object({{"name", json::string(g.name)}, {"values", json::numbers(g.values)}}));
  return json::object({{"kind", json::string("bars")}, {"title", json::string(s.title)},
                       {"y_label", json::string(s.y_label)}, {"categories", strings(s.categories)},
                       {"groups", json::array(std::move(groups))}, {"width", json::number(s.width)},
                       {"height", json::number(s.height)}});
}

Value spec_json(const Heatmap& s) {
  return json::object({{"kind", json::string("heatmap")}, {"title", json::string(s.title)},
                       {"x_label", json::string(s.x_label)}, {"y_label", json::string(s.y_label)},
                       {"row_labels", strings(s.row_labels)}, {"col_labels", strings(s.col_labels)},
                       {"values", json::numbers(s.values)}, {"cell_text", strings(s.cell_text)},
                       {"width", json::number(s.width)}, {"height", json::number(s.height)}});
}

std::string image_name(const std::string& stem, size_t row, size_t panel) {
  return "figure_images/" + stem + "_" + std::to_string(row) + "_" + std::to_string(panel) + ".png";
}

Value panels_json(const std::string& dir, const std::string& stem, const PanelGrid& s,
                  std::vector<std::string>& written) {
  std::vector<Value> rows;
  for (size_t r = 0; r < s.rows.size(); ++r) {
    std::vector<Value> panels;
    for (size_t k = 0; k < s.rows[r].panels.size(); ++k) {
      const std::string file = image_name(stem, r, k);
      write_png(dir + "/" + file, s.rows[r].panels[k].image);
      written.push_back(file);
      panels.push_back(json::object({{"title", json::string(s.rows[r].panels[k].title)}, {"image", json::string(file)}}));
    }
    rows.push_back(json::object({{"caption", json::string(s.rows[r].caption)}, {"panels", json::array(std::move(panels))}}));
  }
  return json::object({{"kind", json::string("panels")}, {"title", json::string(s.title)},
                       {"panel_size", json::number(s.panel_size)}, {"rows", json::array(std::move(rows))}});
}

// ---- reading: every field checked, errors name the file and the figure ----

struct Reader {
  std::string file, figure;

  const Value& need(const Value& o, const std::string& key, Value::Type t, const char* what) const {
    const Value* v = o.get(key);
    NIMBUS_CHECK(v != nullptr, file, ": figure '", figure, "': no \"", key, "\" (", what, ")");
    NIMBUS_CHECK(v->is(t), file, ": figure '", figure, "': \"", key, "\" is not ", what);
    return *v;
  }
  std::string text(const Value& o, const std::string& key) const { return need(o, key, Value::Type::String, "a string").s; }
  int integer(const Value& o, const std::string& key) const {
    const double v = need(o, key, Value::Type::Number, "a number").num;
    NIMBUS_CHECK(v == std::floor(v) && std::abs(v) < 1e6, file, ": figure '", figure, "': \"", key, "\" = ", v,
                 " is not a whole number");
    return int(v);
  }
  double number_or_nan(const Value& v, const std::string& key) const {
    if (v.is(Value::Type::Null)) return std::nan("");
    NIMBUS_CHECK(v.is(Value::Type::Number), file, ": figure '", figure, "': \"", key, "\" holds a non-number");
    return v.num;
  }
  double number_or_nan(const Value& o, const std::string& key, bool) const {
    const Value* v = o.get(key);
    NIMBUS_CHECK(v != nullptr, file, ": figure '", figure, "': no \"", key, "\"");
    return number_or_nan(*v, key);
  }
  std::vector<double> numbers(const Value& o, const std::string& key) const {
    std::vector<double> out;
    for (const Value& v : need(o, key, Value::Type::Array, "an array").arr) out.push_back(number_or_nan(v, key));
    return out;
  }
  std::vector<std::string> texts(const Value& o, const std::string& key) const {
    std::vector<std::string> out;
    for (const Value& v : need(o, key, Value::Type::Array, "an array").arr) {
      NIMBUS_CHECK(v.is(Value::Type::String), file, ": figure '", figure, "': \"", key, "\" holds a non-string");
      out.push_back(v.s);
    }
    return out;
  }
  const std::vector<Value>& objects(const Value& o, const std::string& key) const {
    const Value& a = need(o, key, Value::Type::Array, "an array");
    for (const Value& v : a.arr)
      NIMBUS_CHECK(v.is(Value::Type::Object), file, ": figure '", figure, "': \"", key, "\" holds a non-object");
    return a.arr;
  }
};

Spec spec_from(const Reader& r, const std::string& dir, const Value& f) {
  const std::string kind = r.text(f, "kind");
  if (kind == "line") {
    LineChart s;
    s.title = r.text(f, "title"), s.x_label = r.text(f, "x_label"), s.y_label = r.text(f, "y_label");
    s.y_min = r.number_or_nan(f, "y_min", true), s.y_max = r.number_or_nan(f, "y_max", true);
    s.width = r.integer(f, "width"), s.height = r.integer(f, "height");
    for (const Value& x : r.objects(f, "series")) s.series.push_back({r.text(x, "name"), r.numbers(x, "x"), r.numbers(x, "y")});
    return s;
  }
  if (kind == "bars") {
    BarChart s;
    s.title = r.text(f, "title"), s.y_label = r.text(f, "y_label"), s.categories = r.texts(f, "categories");
    s.width = r.integer(f, "width"), s.height = r.integer(f, "height");
    for (const Value& g : r.objects(f, "groups")) s.groups.push_back({r.text(g, "name"), r.numbers(g, "values")});
    return s;
  }
  if (kind == "heatmap") {
    Heatmap s;
    s.title = r.text(f, "title"), s.x_label = r.text(f, "x_label"), s.y_label = r.text(f, "y_label");
    s.row_labels = r.texts(f, "row_labels"), s.col_labels = r.texts(f, "col_labels");
    s.values = r.numbers(f, "values"), s.cell_text = r.texts(f, "cell_text");
    s.width = r.integer(f, "width"), s.height = r.integer(f, "height");
    return s;
  }
  if (kind == "panels") {
    PanelGrid s;
    s.title = r.text(f, "title"), s.panel_size = r.integer(f, "panel_size");
    for (const Value& row : r.objects(f, "rows")) {
      PanelRow pr;
      pr.caption = r.text(row, "caption");
      for (const Value& p : r.objects(row, "panels")) {
        const std::string image = r.text(p, "image");
        const std::string prefix = "figure_images/";
        NIMBUS_CHECK(image.rfind(prefix, 0) == 0 && plain_name(image.substr(prefix.size())), r.file, ": figure '",
                     r.figure, "': image \"", image, "\" is not a file in figure_images/");
        pr.panels.push_back({r.text(p, "title"), read_png(dir + "/" + image)});
      }
      s.rows.push_back(std::move(pr));
    }
    return s;
  }
  throw Error(str(r.file, ": figure '", r.figure, "': unknown kind \"", kind, "\" (line, bars, heatmap, panels)"));
}

}  // namespace

void write_figures(const std::string& dir, const std::vector<Figure>& figures) {
  fs::create_directories(dir + "/figure_images");
  std::vector<std::string> images;  // "figure_images/<name>.png", this set's
  std::vector<Value> list;
  for (const Figure& f : figures) {
    NIMBUS_CHECK(plain_name(f.stem), "figure file name '", f.stem, "' is not a plain file name");
    Value v = std::visit(
        [&](const auto& s) {
          if constexpr (std::is_same_v<std::decay_t<decltype(s)>, PanelGrid>)
            return panels_json(dir, f.stem, s, images);  // the pixels go to PNG files
          else
            return spec_json(s);
        },
        f.spec);
    v.obj.insert(v.obj.begin(), {"file", json::string(f.stem)});
    list.push_back(std::move(v));
  }
  json::write(dir + "/" + kFiguresFile,
              json::object({{"format", json::string("nimbus figures 1")}, {"figures", json::array(std::move(list))}}));
  // Then an earlier set's images, which the new figures.json does not name (removed last: a failure
  // above leaves the old figures.json with every image it names).
  for (const fs::directory_entry& e : fs::directory_iterator(dir + "/figure_images")) {
    const std::string name = "figure_images/" + e.path().filename().string();
    if (e.is_regular_file() && e.path().extension() == ".png" &&
        std::find(images.begin(), images.end(), name) == images.end())
      fs::remove(e.path());
  }
}

std::vector<Figure> read_figures(const std::string& dir) {
  const std::string path = dir + "/" + kFiguresFile;
  Value root;
  const std::string text = read_text(path);  // its errors name the file already
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
  Reader r{path, "(top level)"};
  NIMBUS_CHECK(root.is(Value::Type::Object), path, ": not a JSON object");
  NIMBUS_CHECK(r.text(root, "format") == "nimbus figures 1", path, ": format \"", r.text(root, "format"),
               "\" is not \"nimbus figures 1\"");
  std::vector<Figure> out;
  for (const Value& f : r.objects(root, "figures")) {
    r.figure = "(unnamed)";
    const std::string stem = r.text(f, "file");
    r.figure = stem;
    NIMBUS_CHECK(plain_name(stem), path, ": figure file name '", stem, "' is not a plain file name");
    out.push_back({stem, spec_from(r, dir, f)});
  }
  return out;
}

std::vector<std::string> draw_figures(const std::string& dir, const std::vector<Figure>& figures) {
  std::vector<std::string> written;
  for (const Figure& f : figures) {
    std::visit([&](const auto& s) { save(dir + "/" + f.stem, s); }, f.spec);
    written.push_back(f.stem + ".png");
    if (!std::holds_alternative<PanelGrid>(f.spec)) written.push_back(f.stem + ".svg");
  }
  return written;
}

std::vector<std::string> remove_stale_figures(const std::string& dir, const std::vector<std::string>& kept) {
  std::vector<std::string> removed;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string(), ext = e.path().extension().string();
    if (!e.is_regular_file() || name.rfind("fig_", 0) != 0 || (ext != ".png" && ext != ".svg")) continue;
    if (std::find(kept.begin(), kept.end(), name) != kept.end()) continue;
    fs::remove(e.path());
    removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

}  // namespace nimbus::plot
