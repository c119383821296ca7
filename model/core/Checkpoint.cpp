//===- Checkpoint.cpp - everything a run needs to continue exactly --------===//

#include "sparsetx/Model/Checkpoint.h"

#include "sparsetx/Support/AtomicFile.h"

#include "llvm/Support/CRC.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cstring>

using namespace sparsetx;
using namespace sparsetx::model;
using llvm::json::Array;
using llvm::json::Object;
using llvm::json::Value;

namespace {

constexpr char kMagic[8] = {'S', 'P', 'T', 'X', 'C', 'K', 'P', 'T'};

template <typename T> void put(std::vector<uint8_t> &out, T value) {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

void putSection(std::vector<uint8_t> &out, const char tag[4],
                llvm::ArrayRef<uint8_t> payload) {
  out.insert(out.end(), tag, tag + 4);
  put<uint64_t>(out, payload.size());
  out.insert(out.end(), payload.begin(), payload.end());
  put<uint32_t>(out, llvm::crc32(payload));
}

llvm::ArrayRef<uint8_t> floatBytes(const std::vector<float> &v) {
  return {reinterpret_cast<const uint8_t *>(v.data()), v.size() * sizeof(float)};
}

Value dataToJSON(const DataSpec &d) {
  return Object{{"source", d.source},
                {"kind", data::toString(d.kind)},
                {"image_height", d.imageHeight},
                {"image_width", d.imageWidth},
                {"image_channels", d.imageChannels},
                {"sample_rate", d.sampleRate}};
}

Value patternToJSON(const PatternSource &p) {
  Array defines;
  for (const auto &[name, value] : p.defines)
    defines.push_back(Object{{"name", name}, {"value", value}});
  return Object{{"text", p.text},
                {"path", p.path},
                {"name", p.name},
                {"defines", std::move(defines)}};
}

} // namespace

llvm::Error sparsetx::model::saveCheckpoint(llvm::StringRef path,
                                            const Checkpoint &c) {
  Object meta{{"model", c.model.toJSON()},
              {"train", c.train.toJSON()},
              {"pattern", patternToJSON(c.pattern)},
              {"data", dataToJSON(c.data)},
              {"step", c.step},
              // Every random choice is a counter-based function of these.
              {"rng", Object{{"seed", static_cast<int64_t>(c.train.seed)},
                             {"counter", c.step}}},
              {"data_position", c.step * c.train.batch},
              {"loss_scale", Object{{"scale", c.lossScale},
                                    {"good_steps", c.lossScaleGoodSteps}}}};
  std::string metaText;
  llvm::raw_string_ostream os(metaText);
  os << llvm::formatv("{0:2}", Value(std::move(meta)));

  std::vector<uint8_t> out;
  out.insert(out.end(), kMagic, kMagic + 8);
  put<uint32_t>(out, kCheckpointVersion);
  put<uint32_t>(out, 4);
  putSection(out, "META",
             {reinterpret_cast<const uint8_t *>(metaText.data()), metaText.size()});
  putSection(out, "PARM", floatBytes(c.params));
  putSection(out, "ADAM", floatBytes(c.adamM));
  putSection(out, "ADAV", floatBytes(c.adamV));
  return writeFileAtomically(path, out);
}

namespace {

/// Reads sections in order, checking lengths and CRCs.
class Reader {
public:
  Reader(llvm::StringRef path, llvm::ArrayRef<uint8_t> bytes)
      : path(path), bytes(bytes) {}

  llvm::Error error(uint64_t offset, const llvm::Twine &message) const {
    return data::dataError(path, offset, message);
  }

  template <typename T> llvm::Expected<T> read(llvm::StringRef what) {
    if (bytes.size() - pos < sizeof(T))
      return error(pos, "truncated: the file ends inside the " + what);
    T value;
    std::memcpy(&value, bytes.data() + pos, sizeof(T));
    pos += sizeof(T);
    return value;
  }

  llvm::Expected<llvm::ArrayRef<uint8_t>> section(llvm::StringRef tag) {
    uint64_t start = pos;
    if (bytes.size() - pos < 4)
      return error(pos, "truncated: section '" + tag + "' is missing");
    llvm::StringRef found(reinterpret_cast<const char *>(bytes.data() + pos), 4);
    if (found != tag)
      return error(pos, "expected section '" + tag + "', found '" +
                            llvm::StringRef(found).str() + "'");
    pos += 4;
    llvm::Expected<uint64_t> length = read<uint64_t>("length of section '" + tag.str() + "'");
    if (!length)
      return length.takeError();
    if (*length > bytes.size() - pos)
      return error(start, llvm::formatv("truncated: section '{0}' needs {1} "
                                        "bytes, {2} remain",
                                        tag, *length, bytes.size() - pos));
    llvm::ArrayRef<uint8_t> payload = bytes.slice(pos, *length);
    pos += *length;
    llvm::Expected<uint32_t> crc = read<uint32_t>("checksum of section '" + tag.str() + "'");
    if (!crc)
      return crc.takeError();
    if (*crc != llvm::crc32(payload))
      return error(start, "section '" + tag + "' is corrupt (CRC-32 mismatch)");
    lastStart = start;
    return payload;
  }

  llvm::Expected<std::vector<float>> floats(llvm::StringRef tag) {
    llvm::Expected<llvm::ArrayRef<uint8_t>> payload = section(tag);
    if (!payload)
      return payload.takeError();
    if (payload->size() % sizeof(float) != 0)
      return error(lastStart, llvm::formatv("section '{0}' has {1} bytes, not "
                                            "a whole number of floats",
                                            tag, payload->size()));
    std::vector<float> v(payload->size() / sizeof(float));
    std::memcpy(v.data(), payload->data(), payload->size());
    return v;
  }

  uint64_t offset() const { return pos; }
  uint64_t sectionStart() const { return lastStart; }
  bool atEnd() const { return pos == bytes.size(); }

private:
  llvm::StringRef path;
  llvm::ArrayRef<uint8_t> bytes;
  uint64_t pos = 0, lastStart = 0;
};

} // namespace

llvm::Expected<Checkpoint> sparsetx::model::loadCheckpoint(llvm::StringRef path) {
  llvm::Expected<std::vector<uint8_t>> file = data::readFileBytes(path);
  if (!file)
    return file.takeError();
  Reader r(path, *file);
  if (file->size() < 8 || std::memcmp(file->data(), kMagic, 8) != 0)
    return r.error(0, "not a sparsetx checkpoint (the file does not start "
                      "with \"SPTXCKPT\")");
  (void)r.read<uint64_t>("magic");
  llvm::Expected<uint32_t> version = r.read<uint32_t>("header");
  if (!version)
    return version.takeError();
  if (*version != kCheckpointVersion)
    return r.error(8, llvm::formatv("checkpoint version {0} is not supported "
                                    "(this build reads version {1})",
                                    *version, kCheckpointVersion));
  llvm::Expected<uint32_t> sections = r.read<uint32_t>("header");
  if (!sections)
    return sections.takeError();
  if (*sections != 4)
    return r.error(12, llvm::formatv("expected 4 sections, the header says {0}",
                                     *sections));

  llvm::Expected<llvm::ArrayRef<uint8_t>> metaBytes = r.section("META");
  if (!metaBytes)
    return metaBytes.takeError();
  uint64_t metaOffset = r.sectionStart();
  auto metaError = [&](const llvm::Twine &message) {
    return r.error(metaOffset, "metadata: " + message);
  };
  llvm::Expected<Value> meta = llvm::json::parse(llvm::StringRef(
      reinterpret_cast<const char *>(metaBytes->data()), metaBytes->size()));
  if (!meta)
    return metaError(llvm::toString(meta.takeError()));
  const Object *root = meta->getAsObject();
  if (!root)
    return metaError("not a JSON object");

  Checkpoint c;
  auto field = [&](llvm::StringRef key) -> const Value * {
    return root->get(key);
  };
  const Value *model = field("model"), *train = field("train"),
              *pattern = field("pattern"), *dataSpec = field("data");
  std::optional<int64_t> step =
      field("step") ? field("step")->getAsInteger() : std::nullopt;
  if (!model || !train || !pattern || !dataSpec || !step)
    return metaError("lacks one of model, train, pattern, data, step");
  llvm::Expected<ModelConfig> modelConfig = ModelConfig::fromJSON(*model);
  if (!modelConfig)
    return metaError(llvm::toString(modelConfig.takeError()));
  c.model = *modelConfig;
  llvm::Expected<TrainConfig> trainConfig = TrainConfig::fromJSON(*train);
  if (!trainConfig)
    return metaError(llvm::toString(trainConfig.takeError()));
  c.train = *trainConfig;
  if (*step < 0)
    return metaError("negative step");
  c.step = *step;
  if (const Value *ls = field("loss_scale")) {
    const Object *o = ls->getAsObject();
    std::optional<double> scale = o ? o->getNumber("scale") : std::nullopt;
    std::optional<int64_t> good = o ? o->getInteger("good_steps") : std::nullopt;
    if (!scale || !good || !(*scale >= 0) || !std::isfinite(*scale) || *good < 0)
      return metaError("loss_scale needs a scale >= 0 and good_steps >= 0");
    c.lossScale = *scale;
    c.lossScaleGoodSteps = *good;
  }

  const Object *p = pattern->getAsObject();
  std::optional<llvm::StringRef> text = p ? p->getString("text") : std::nullopt,
                                 ppath = p ? p->getString("path") : std::nullopt,
                                 pname = p ? p->getString("name") : std::nullopt;
  const Array *defines = p ? p->getArray("defines") : nullptr;
  if (!text || !ppath || !pname || !defines)
    return metaError("the pattern lacks text, path, name or defines");
  c.pattern.text = text->str();
  c.pattern.path = ppath->str();
  c.pattern.name = pname->str();
  for (const Value &d : *defines) {
    const Object *o = d.getAsObject();
    std::optional<llvm::StringRef> name = o ? o->getString("name") : std::nullopt;
    std::optional<int64_t> value = o ? o->getInteger("value") : std::nullopt;
    if (!name || !value)
      return metaError("a pattern define lacks its name or value");
    c.pattern.defines.emplace_back(name->str(), *value);
  }

  const Object *d = dataSpec->getAsObject();
  std::optional<llvm::StringRef> source = d ? d->getString("source") : std::nullopt,
                                 kind = d ? d->getString("kind") : std::nullopt;
  if (!source || !kind)
    return metaError("the data lacks its source or kind");
  c.data.source = source->str();
  if (*kind == "text")
    c.data.kind = data::DataKind::Text;
  else if (*kind == "image")
    c.data.kind = data::DataKind::Image;
  else if (*kind == "audio")
    c.data.kind = data::DataKind::Audio;
  else
    return metaError("unknown data kind '" + *kind + "'");
  c.data.imageHeight = d->getInteger("image_height").value_or(0);
  c.data.imageWidth = d->getInteger("image_width").value_or(0);
  c.data.imageChannels = d->getInteger("image_channels").value_or(0);
  c.data.sampleRate = d->getInteger("sample_rate").value_or(0);

  llvm::Expected<std::vector<float>> params = r.floats("PARM");
  if (!params)
    return params.takeError();
  uint64_t paramOffset = r.sectionStart();
  llvm::Expected<std::vector<float>> m = r.floats("ADAM");
  if (!m)
    return m.takeError();
  llvm::Expected<std::vector<float>> v = r.floats("ADAV");
  if (!v)
    return v.takeError();
  if (m->size() != params->size() || v->size() != params->size())
    return r.error(paramOffset,
                   llvm::formatv("{0} parameters but {1} and {2} Adam moments",
                                 params->size(), m->size(), v->size()));
  if (!r.atEnd())
    return r.error(r.offset(), llvm::formatv("{0} unexpected bytes after the "
                                             "last section",
                                             file->size() - r.offset()));
  c.params = std::move(*params);
  c.adamM = std::move(*m);
  c.adamV = std::move(*v);
  return c;
}
