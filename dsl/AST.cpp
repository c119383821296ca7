//===- AST.cpp - abstract syntax of the .sp language ----------------------===//
//
// Names of the enums, lookups, and the tree dump of `sparsec --emit=ast`.
//
// Dump format (FileChecked, so keep it stable): one node per line, two spaces
// of indentation per level, `<line:col>` last. Patterns and lets show their
// name's location, binary and unary nodes their operator's, calls their
// callee's, other expressions their first character's. After sema every
// expression shows its type (`: int`, `: bool`); before, `: unknown`.
//
//   pattern 'strided' (l = 128) causal <2:9>
//     let row : bool <4:7>
//       binary '<' : bool <4:21>
//         binary '-' : int <4:17>
//           name 'i' query : int <4:15>
//           name 'j' key : int <4:19>
//         name 'l' param : int <4:23>
//     heads <6:3>
//       binary '||' : bool <6:15>
//         ...
//
//===----------------------------------------------------------------------===//

#include "sparsetx/DSL/AST.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Casting.h"
#include "llvm/Support/SourceMgr.h"

using namespace sparsetx::dsl;
using llvm::StringRef;

StringRef sparsetx::dsl::toString(Type type) {
  switch (type) {
  case Type::Unknown:
    return "unknown";
  case Type::Int:
    return "int";
  case Type::Bool:
    return "bool";
  case Type::Error:
    return "error";
  }
  return "unknown";
}

StringRef sparsetx::dsl::toString(UnaryOp op) {
  switch (op) {
  case UnaryOp::Neg:
    return "-";
  case UnaryOp::Not:
    return "!";
  }
  return "?";
}

StringRef sparsetx::dsl::toString(BinaryOp op) {
  switch (op) {
  case BinaryOp::Add:
    return "+";
  case BinaryOp::Sub:
    return "-";
  case BinaryOp::Mul:
    return "*";
  case BinaryOp::Div:
    return "/";
  case BinaryOp::Mod:
    return "%";
  case BinaryOp::Eq:
    return "==";
  case BinaryOp::Ne:
    return "!=";
  case BinaryOp::Lt:
    return "<";
  case BinaryOp::Le:
    return "<=";
  case BinaryOp::Gt:
    return ">";
  case BinaryOp::Ge:
    return ">=";
  case BinaryOp::And:
    return "&&";
  case BinaryOp::Or:
    return "||";
  }
  return "?";
}

StringRef sparsetx::dsl::toString(Builtin fn) {
  switch (fn) {
  case Builtin::Min:
    return "min";
  case Builtin::Max:
    return "max";
  case Builtin::Abs:
    return "abs";
  }
  return "?";
}

const ParamDecl *PatternDecl::findParam(StringRef name) const {
  for (const ParamDecl &param : params)
    if (param.name == name)
      return &param;
  return nullptr;
}

const PatternDecl *Module::findPattern(StringRef name) const {
  for (const auto &pattern : patterns)
    if (pattern->name == name)
      return pattern.get();
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Dump
//===----------------------------------------------------------------------===//

namespace {

class Dumper {
public:
  Dumper(const llvm::SourceMgr &sourceMgr, llvm::raw_ostream &os)
      : sourceMgr(sourceMgr), os(os) {}

  void dumpPattern(const PatternDecl &pattern);

private:
  void indent(unsigned level) { os.indent(2 * level); }
  void printLoc(llvm::SMLoc loc) {
    if (!loc.isValid()) {
      os << " <?>\n";
      return;
    }
    auto [line, col] = sourceMgr.getLineAndColumn(loc);
    os << " <" << line << ":" << col << ">\n";
  }
  void dumpExpr(const Expr &expr, unsigned level);

  const llvm::SourceMgr &sourceMgr;
  llvm::raw_ostream &os;
};

} // namespace

static StringRef refName(NameExpr::Ref ref) {
  switch (ref) {
  case NameExpr::Ref::Unresolved:
    return "";
  case NameExpr::Ref::Query:
    return " query";
  case NameExpr::Ref::Key:
    return " key";
  case NameExpr::Ref::SeqLen:
    return " seq-len";
  case NameExpr::Ref::Head:
    return " head";
  case NameExpr::Ref::Param:
    return " param";
  case NameExpr::Ref::Let:
    return " let";
  }
  return "";
}

void Dumper::dumpExpr(const Expr &expr, unsigned level) {
  indent(level);
  llvm::SMLoc loc = expr.getLoc();
  switch (expr.getKind()) {
  case Expr::Kind::IntLit:
    os << "int " << llvm::cast<IntLitExpr>(expr).value;
    break;
  case Expr::Kind::BoolLit:
    os << "bool " << (llvm::cast<BoolLitExpr>(expr).value ? "true" : "false");
    break;
  case Expr::Kind::Name: {
    const auto &name = llvm::cast<NameExpr>(expr);
    os << "name '" << name.name << "'" << refName(name.ref);
    break;
  }
  case Expr::Kind::Unary: {
    const auto &unary = llvm::cast<UnaryExpr>(expr);
    os << "unary '" << toString(unary.op) << "'";
    loc = unary.opRange.Start;
    break;
  }
  case Expr::Kind::Binary: {
    const auto &binary = llvm::cast<BinaryExpr>(expr);
    os << "binary '" << toString(binary.op) << "'";
    loc = binary.opRange.Start;
    break;
  }
  case Expr::Kind::Call: {
    const auto &call = llvm::cast<CallExpr>(expr);
    os << "call '" << toString(call.callee) << "'";
    loc = call.calleeRange.Start;
    break;
  }
  }
  os << " : " << toString(expr.type);
  printLoc(loc);

  switch (expr.getKind()) {
  case Expr::Kind::Unary:
    dumpExpr(*llvm::cast<UnaryExpr>(expr).operand, level + 1);
    break;
  case Expr::Kind::Binary:
    dumpExpr(*llvm::cast<BinaryExpr>(expr).lhs, level + 1);
    dumpExpr(*llvm::cast<BinaryExpr>(expr).rhs, level + 1);
    break;
  case Expr::Kind::Call:
    for (const ExprPtr &arg : llvm::cast<CallExpr>(expr).args)
      dumpExpr(*arg, level + 1);
    break;
  default:
    break;
  }
}

static StringRef formName(MaskForm form) {
  switch (form) {
  case MaskForm::None:
    return "none";
  case MaskForm::Heads:
    return "heads";
  case MaskForm::PerHead:
    return "heads[h]";
  case MaskForm::Layers:
    return "layers";
  }
  return "none";
}

void Dumper::dumpPattern(const PatternDecl &pattern) {
  os << "pattern '" << pattern.name << "' (";
  llvm::interleaveComma(pattern.params, os, [&](const ParamDecl &param) {
    os << param.name << " = " << param.value;
    if (param.overridden)
      os << " [-D]";
  });
  os << ")";
  if (pattern.causal)
    os << " causal";
  printLoc(pattern.nameRange.Start);

  for (const auto &let : pattern.lets) {
    indent(1);
    os << "let " << let->name << " : " << toString(let->init->type);
    if (let->usesHead)
      os << " uses-h";
    printLoc(let->nameRange.Start);
    dumpExpr(*let->init, 2);
  }

  if (pattern.form != MaskForm::None) {
    indent(1);
    os << formName(pattern.form);
    printLoc(pattern.formRange.Start);
    for (const ExprPtr &mask : pattern.masks)
      dumpExpr(*mask, 2);
  }
}

void sparsetx::dsl::dump(const Module &module, const llvm::SourceMgr &sourceMgr,
                         llvm::raw_ostream &os) {
  Dumper dumper(sourceMgr, os);
  for (const auto &pattern : module.patterns)
    dumper.dumpPattern(*pattern);
}
