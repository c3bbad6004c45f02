# Run at every build (CMakeLists.txt, target gossamer_revision): writes OUT, a header defining
# GOSSAMER_GIT_REVISION as the project's commit now ("-dirty" with uncommitted changes to tracked
# files, "unknown" outside git), and rewrites it only when that changed, so that only the files
# including it are compiled again. The benchmarks' results name the commit they were built at.
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${SOURCE}
                OUTPUT_VARIABLE revision OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0 OR revision STREQUAL "")
  set(revision "unknown")
else()
  execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SOURCE}
                  OUTPUT_VARIABLE dirty ERROR_QUIET)
  if(NOT dirty STREQUAL "")
    string(APPEND revision "-dirty")
  endif()
endif()
set(text "#define GOSSAMER_GIT_REVISION \"${revision}\"\n")
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
