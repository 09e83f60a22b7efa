# Writes IN's bytes into OUT as a C++ array: cg::kDefaultConfigYaml.
file(READ ${IN} content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
file(WRITE ${OUT} "// Generated from config/chatgate.yaml; do not edit.\n#include <string_view>\nnamespace cg {\nstatic const char kBytes[] = {${bytes} 0};\nextern const std::string_view kDefaultConfigYaml;\nconst std::string_view kDefaultConfigYaml(kBytes, sizeof(kBytes) - 1);\n}\n")
