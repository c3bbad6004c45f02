# IN (a .cu file) -> OUT (C++ for the emulation, include/cuda_runtime.h): every kernel launch
# `kernel<<<grid, block, shm, s>>>(args)` becomes `kernel * ::gossamer_emu::Launch(grid, block, shm, s)(args)`;
# a #line keeps the compiler's messages on the .cu file's lines.
file(READ "${IN}" text)
string(REPLACE "<<<" " * ::gossamer_emu::Launch(" text "${text}")
string(REPLACE ">>>(" ")(" text "${text}")
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${text}")
