//===- AtomicFile.cpp - replace a file only with a complete one -----------===//

#include "sparsetx/Support/AtomicFile.h"

#include "llvm/ADT/Twine.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

using namespace sparsetx;

static bool writeAll(int fd, const uint8_t *data, size_t size) {
  while (size > 0) {
    ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

llvm::Error sparsetx::writeFileAtomically(llvm::StringRef path,
                                          llvm::ArrayRef<uint8_t> bytes) {
  auto fail = [&](const llvm::Twine &what, int error) {
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        what + " '" + path + "': " + std::strerror(error));
  };
  // A new file beside the target (same file system, so rename is atomic),
  // created exclusively so that two writers never share one.
  static unsigned counter = 0;
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = (path + ".tmp." + llvm::Twine(::getpid()) + "." +
           llvm::Twine(__atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED)))
              .str();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  if (fd < 0)
    return fail("cannot create a temporary file for", errno);
  if (!writeAll(fd, bytes.data(), bytes.size()) || ::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail("cannot write", saved);
  }
  if (::close(fd) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    return fail("cannot write", saved);
  }
  if (::rename(tmp.c_str(), path.str().c_str()) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    return fail("cannot replace", saved);
  }
  // Make the rename itself durable; a failure here leaves a good file.
  llvm::StringRef dir =
      path.contains('/') ? path.substr(0, path.rfind('/')) : llvm::StringRef(".");
  if (dir.empty())
    dir = "/";
  int dirFd = ::open(dir.str().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
  return llvm::Error::success();
}
