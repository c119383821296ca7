//===- SPOps.cpp - sp dialect operations ----------------------------------===//
//
// Custom syntax, verifiers and folders of the sp dialect. The syntax mirrors
// the .sp language: `sp.pattern @fixed(l = 128, c = 32) causal { ... }` and
// `sp.mask layer 1 (%i, %j) { ... }`.
//
//===----------------------------------------------------------------------===//

#include "sparsetx/Dialect/SP/IR/SP.h"
#include "sparsetx/Support/IntMath.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

using namespace mlir;
using namespace sparsetx;
using namespace sparsetx::sp;

//===----------------------------------------------------------------------===//
// PatternOp
//===----------------------------------------------------------------------===//

void PatternOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                      ArrayRef<StringRef> paramNames,
                      ArrayRef<int64_t> paramValues, bool causal) {
  state.addAttribute(getSymNameAttrName(state.name),
                     builder.getStringAttr(name));
  state.addAttribute(getParamNamesAttrName(state.name),
                     builder.getStrArrayAttr(paramNames));
  state.addAttribute(getParamValuesAttrName(state.name),
                     builder.getDenseI64ArrayAttr(paramValues));
  if (causal)
    state.addAttribute(getCausalAttrName(state.name), builder.getUnitAttr());
  Region *body = state.addRegion();
  body->push_back(new Block());
}

std::optional<int64_t> PatternOp::getParam(StringRef name) {
  ArrayRef<int64_t> values = getParamValues();
  for (auto [idx, attr] : llvm::enumerate(getParamNames()))
    if (cast<StringAttr>(attr).getValue() == name)
      return values[idx];
  return std::nullopt;
}

bool PatternOp::setParam(StringRef name, int64_t value) {
  SmallVector<int64_t> values(getParamValues());
  for (auto [idx, attr] : llvm::enumerate(getParamNames())) {
    if (cast<StringAttr>(attr).getValue() != name)
      continue;
    values[idx] = value;
    setParamValues(values);
    return true;
  }
  return false;
}

SmallVector<MaskOp> PatternOp::getMasks() {
  return llvm::to_vector(getBodyBlock().getOps<MaskOp>());
}

bool PatternOp::isLayered() {
  auto masks = getBodyBlock().getOps<MaskOp>();
  return !masks.empty() && (*masks.begin()).getLayer().has_value();
}

// pattern ::= `sp.pattern` @name `(` (ident `=` int),* `)` `causal`?
//             attr-dict-with-keyword region
ParseResult PatternOp::parse(OpAsmParser &parser, OperationState &result) {
  StringAttr name;
  if (parser.parseSymbolName(name, getSymNameAttrName(result.name),
                             result.attributes))
    return failure();
  SmallVector<Attribute> names;
  SmallVector<int64_t> values;
  auto parseParam = [&]() -> ParseResult {
    StringRef key;
    int64_t value;
    if (parser.parseKeyword(&key) || parser.parseEqual() ||
        parser.parseInteger(value))
      return failure();
    names.push_back(parser.getBuilder().getStringAttr(key));
    values.push_back(value);
    return success();
  };
  if (parser.parseCommaSeparatedList(OpAsmParser::Delimiter::Paren, parseParam))
    return failure();
  Builder &b = parser.getBuilder();
  result.addAttribute(getParamNamesAttrName(result.name), b.getArrayAttr(names));
  result.addAttribute(getParamValuesAttrName(result.name),
                      b.getDenseI64ArrayAttr(values));
  if (succeeded(parser.parseOptionalKeyword("causal")))
    result.addAttribute(getCausalAttrName(result.name), b.getUnitAttr());
  if (parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  Region *body = result.addRegion();
  if (parser.parseRegion(*body, /*arguments=*/{}))
    return failure();
  if (body->empty())
    body->push_back(new Block());
  return success();
}

void PatternOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printSymbolName(getSymName());
  p << '(';
  ArrayRef<int64_t> values = getParamValues();
  llvm::interleaveComma(llvm::enumerate(getParamNames()), p, [&](auto it) {
    p << cast<StringAttr>(it.value()).getValue() << " = " << values[it.index()];
  });
  p << ')';
  if (getCausal())
    p << " causal";
  p.printOptionalAttrDictWithKeyword(
      (*this)->getAttrs(),
      {getSymNameAttrName(), getParamNamesAttrName(), getParamValuesAttrName(),
       getCausalAttrName()});
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false,
                /*printBlockTerminators=*/false);
}

LogicalResult PatternOp::verify() {
  if (getParamNames().size() != getParamValues().size())
    return emitOpError("has ") << getParamNames().size()
                               << " parameter names but "
                               << getParamValues().size() << " values";
  llvm::StringSet<> seen;
  for (Attribute attr : getParamNames())
    if (!seen.insert(cast<StringAttr>(attr).getValue()).second)
      return emitOpError("has two parameters named '")
             << cast<StringAttr>(attr).getValue() << "'";
  if (std::optional<int64_t> n = getSeqLen(); n && *n <= 0)
    return emitOpError("sequence length must be positive, but is ") << *n;
  if (std::optional<int64_t> h = getNumHeads(); h && *h <= 0)
    return emitOpError("head count must be positive, but is ") << *h;

  // Masks come grouped by layer (layers 0..N-1 in order, or one unlayered
  // group); within a group either one mask for every head or, after
  // specialization, one per head, heads 0..H-1 in order.
  int64_t count = 0;
  bool layered = false;
  int64_t group = -1;
  std::optional<int64_t> lastHead;
  bool groupHasShared = false;
  for (Operation &op : getBodyBlock()) {
    auto mask = dyn_cast<MaskOp>(op);
    if (!mask)
      return op.emitOpError("is not allowed in a pattern body; only 'sp.mask' is");
    std::optional<int64_t> layer = mask.getLayer();
    if (count == 0)
      layered = layer.has_value();
    if (layered && !layer)
      return mask.emitOpError("needs a layer index: the pattern is layered");
    if (!layered && layer)
      return mask.emitOpError("has a layer index but the first mask has none");
    int64_t thisGroup = layer.value_or(0);
    std::optional<int64_t> head = mask.getHead();
    if (thisGroup != group) {
      if (layered && thisGroup != group + 1)
        return mask.emitOpError("has layer index ")
               << thisGroup << " but is entry " << group + 1 << " of the layers";
      if (!layered && count > 0)
        return mask.emitOpError("is a second mask of a pattern without layers");
      group = thisGroup;
      groupHasShared = !head;
      if (head && *head != 0)
        return mask.emitOpError("is for head ")
               << *head << " but the masks of a layer start at head 0";
    } else {
      if (groupHasShared || !head) {
        if (!layered)
          return mask.emitOpError(
              "is a second mask of a pattern without layers");
        return mask.emitOpError("repeats layer ") << thisGroup;
      }
      if (*head != *lastHead + 1)
        return mask.emitOpError("is for head ")
               << *head << " but follows head " << *lastHead;
    }
    lastHead = head;
    ++count;
  }
  if (count == 0)
    return emitOpError("has no mask");
  return success();
}

//===----------------------------------------------------------------------===//
// MaskOp
//===----------------------------------------------------------------------===//

void MaskOp::build(OpBuilder &builder, OperationState &state,
                   std::optional<int64_t> layer, bool perHead) {
  if (layer)
    state.addAttribute(getLayerAttrName(state.name),
                       builder.getI64IntegerAttr(*layer));
  Region *body = state.addRegion();
  auto *block = new Block();
  Type i64 = builder.getI64Type();
  block->addArgument(i64, state.location);
  block->addArgument(i64, state.location);
  if (perHead)
    block->addArgument(i64, state.location);
  body->push_back(block);
}

YieldOp MaskOp::getYield() {
  return dyn_cast<YieldOp>(getBodyBlock().getTerminator());
}

unsigned MaskOp::getNumComponents() {
  YieldOp yield = getYield();
  return yield ? yield.getValues().size() : 0;
}

// mask ::= `sp.mask` (`layer` int)? (`head` int)? `(` %i `,` %j (`,` %h)? `)`
//          attr-dict-with-keyword region
ParseResult MaskOp::parse(OpAsmParser &parser, OperationState &result) {
  Builder &b = parser.getBuilder();
  if (succeeded(parser.parseOptionalKeyword("layer"))) {
    int64_t layer = 0;
    if (parser.parseInteger(layer))
      return failure();
    result.addAttribute(getLayerAttrName(result.name),
                        b.getI64IntegerAttr(layer));
  }
  if (succeeded(parser.parseOptionalKeyword("head"))) {
    int64_t head = 0;
    if (parser.parseInteger(head))
      return failure();
    result.addAttribute(getHeadAttrName(result.name),
                        b.getI64IntegerAttr(head));
  }
  SmallVector<OpAsmParser::Argument> args;
  if (parser.parseArgumentList(args, OpAsmParser::Delimiter::Paren,
                               /*allowType=*/false))
    return failure();
  for (OpAsmParser::Argument &arg : args)
    arg.type = b.getI64Type();
  if (parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  Region *body = result.addRegion();
  return parser.parseRegion(*body, args);
}

void MaskOp::print(OpAsmPrinter &p) {
  if (std::optional<int64_t> layer = getLayer())
    p << " layer " << *layer;
  if (std::optional<int64_t> head = getHead())
    p << " head " << *head;
  p << " (";
  llvm::interleaveComma(getBodyBlock().getArguments(), p,
                        [&](BlockArgument arg) { p.printOperand(arg); });
  p << ')';
  p.printOptionalAttrDictWithKeyword((*this)->getAttrs(),
                                    {getLayerAttrName(), getHeadAttrName()});
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false);
}

LogicalResult MaskOp::verifyRegions() {
  if (getBody().empty())
    return emitOpError("has an empty body");
  Block &block = getBodyBlock();
  unsigned numArgs = block.getNumArguments();
  if (numArgs != 2 && numArgs != 3)
    return emitOpError("takes (i, j) or (i, j, h), but has ")
           << numArgs << " arguments";
  for (BlockArgument arg : block.getArguments())
    if (!arg.getType().isInteger(64))
      return emitOpError("arguments must be i64, but argument #")
             << arg.getArgNumber() << " is " << arg.getType();
  if (block.empty() || !isa<YieldOp>(block.back()))
    return emitOpError("body must end with 'sp.yield'");
  if (std::optional<int64_t> layer = getLayer(); layer && *layer < 0)
    return emitOpError("layer index must be non-negative, but is ") << *layer;
  if (std::optional<int64_t> head = getHead()) {
    if (*head < 0)
      return emitOpError("head index must be non-negative, but is ") << *head;
    if (numArgs != 2)
      return emitOpError("is specialized to head ")
             << *head << " and so takes (i, j), but has " << numArgs
             << " arguments";
  }
  if (std::optional<ArrayAttr> maps = getIndexMaps()) {
    if (maps->size() != getNumComponents())
      return emitOpError("has ") << maps->size() << " index map pairs for "
                                 << getNumComponents() << " components";
    for (Attribute pair : *maps) {
      auto arr = dyn_cast<ArrayAttr>(pair);
      if (!arr || arr.size() != 2 || !isa<StringAttr>(arr[0]) ||
          !isa<StringAttr>(arr[1]))
        return emitOpError("index_maps entries must be [query map, key map] "
                           "string pairs");
    }
  }
  return success();
}

void MaskOp::getAsmBlockArgumentNames(Region &region,
                                      OpAsmSetValueNameFn setNameFn) {
  static const char *const names[] = {"i", "j", "h"};
  for (BlockArgument arg : region.getArguments())
    if (arg.getArgNumber() < 3)
      setNameFn(arg, names[arg.getArgNumber()]);
}

//===----------------------------------------------------------------------===//
// ParamOp, SeqLenOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  auto pattern = (*this)->getParentOfType<PatternOp>();
  if (!pattern)
    return emitOpError("must be inside an 'sp.pattern'");
  if (!pattern.getParam(getName()))
    return emitOpError("refers to '")
           << getName() << "', which is not a parameter of pattern @"
           << pattern.getSymName();
  return success();
}

void ParamOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), getName());
}

void SeqLenOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getResult(), "n");
}

//===----------------------------------------------------------------------===//
// DivOp, ModOp
//===----------------------------------------------------------------------===//

static LogicalResult verifyDivisor(Operation *op, Value divisor) {
  APInt value;
  if (matchPattern(divisor, m_ConstantInt(&value)) && !value.isStrictlyPositive())
    return op->emitOpError("divisor must be positive, but is ")
           << value.getSExtValue();
  return success();
}

LogicalResult YieldOp::verify() {
  if (getValues().empty())
    return emitOpError("must yield at least one component");
  return success();
}

LogicalResult DivOp::verify() { return verifyDivisor(*this, getRhs()); }
LogicalResult ModOp::verify() { return verifyDivisor(*this, getRhs()); }

template <typename Fn>
static OpFoldResult foldFloor(Attribute lhsAttr, Attribute rhsAttr, Type type,
                              Fn fn) {
  auto lhs = dyn_cast_if_present<IntegerAttr>(lhsAttr);
  auto rhs = dyn_cast_if_present<IntegerAttr>(rhsAttr);
  if (!lhs || !rhs || rhs.getInt() <= 0)
    return {};
  return IntegerAttr::get(type, fn(lhs.getInt(), rhs.getInt()));
}

OpFoldResult DivOp::fold(FoldAdaptor adaptor) {
  if (auto rhs = dyn_cast_if_present<IntegerAttr>(adaptor.getRhs());
      rhs && rhs.getInt() == 1)
    return getLhs();
  return foldFloor(adaptor.getLhs(), adaptor.getRhs(), getType(), floorDiv);
}

OpFoldResult ModOp::fold(FoldAdaptor adaptor) {
  if (auto rhs = dyn_cast_if_present<IntegerAttr>(adaptor.getRhs());
      rhs && rhs.getInt() == 1)
    return IntegerAttr::get(getType(), 0);
  return foldFloor(adaptor.getLhs(), adaptor.getRhs(), getType(), floorMod);
}

#define GET_OP_CLASSES
#include "sparsetx/Dialect/SP/IR/SPOps.cpp.inc"
