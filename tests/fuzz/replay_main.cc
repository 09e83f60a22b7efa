// Replays seed corpora through a fuzz target without libFuzzer, so the
// regression inputs run in ctest with the ordinary compiler (and under the
// sanitizer build): `replay_<target> DIR...` feeds every file of each DIR to
// LLVMFuzzerTestOneInput once. A crash or sanitizer report fails the test;
// an input that runs over 10 s (the inputs that once hung the config parser)
// is killed by SIGALRM, after its name was printed.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
    return 2;
  }
  size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    for (const auto &entry : std::filesystem::directory_iterator(argv[i], ec)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    if (ec) {
      std::fprintf(stderr, "replay: cannot read %s: %s\n", argv[i], ec.message().c_str());
      return 1;
    }
    if (files.empty()) {
      std::fprintf(stderr, "replay: %s has no inputs\n", argv[i]);
      return 1;
    }
    std::sort(files.begin(), files.end());  // a stable order to name a failure by
    for (const auto &path : files) {
      std::ifstream in(path, std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
      if (!in.eof() && in.fail()) {
        std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
        return 1;
      }
      std::printf("replay: %s (%zu bytes)\n", path.c_str(), bytes.size());
      std::fflush(stdout);
      alarm(10);
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
      alarm(0);
      ++inputs;
    }
  }
  std::printf("replay: %zu inputs, no crash, no hang\n", inputs);
  return 0;
}
