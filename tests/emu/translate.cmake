# IN (a .cu file) -> OUT (C++ for the emulation, include/cuda_runtime.h): every kernel launch
# `kernel<<<grid, block, shm, s>>>(args)` becomes
# `kernel * ::gossamer_emu::Launch(GOSSAMER_EMU_NAME(kernel), grid, block, shm, s)(args)`, the
# kernel's name (template arguments and all) kept for the traffic report (traffic.hpp); a #line
# keeps the compiler's messages on the .cu file's lines.
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*(<[A-Za-z0-9_, ]*>)?)[ \t]*<<<"
       "\\1 * ::gossamer_emu::Launch(GOSSAMER_EMU_NAME(\\1), " text "${text}")
string(REPLACE ">>>(" ")(" text "${text}")
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${text}")
