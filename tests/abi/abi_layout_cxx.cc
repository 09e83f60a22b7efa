// The same checks, compiled as C++.
#include "abi_layout.c"
