# SPDX-License-Identifier: Apache-2.0
# The layering the build enforces (docs/architecture.md, "Layering"), checked with the
# compiler: for each case, a one-line probe `#include "<header>"` is preprocessed with
# exactly the include directories a target's sources get (or its users get), as CMake
# computed them. Every header the case allows must resolve; every header it forbids must
# exist in the source tree and fail with the compiler's "no such file" for that very header
# (not for one it includes in turn).
# Run by ctest (tests/CMakeLists.txt, layering_test) after the build (generated headers):
#   cmake -DCXX=<compiler> -DSOURCE_DIR=<src> -DCASES=<cases file> -DWORK=<dir> -P layering_test.cmake
# CASES holds lines layering_case(<target> <what it sees> <allowed> <forbidden> <dirs>),
# written at generate time (file(GENERATE)).
cmake_minimum_required(VERSION 3.22)
if(NOT CXX OR NOT SOURCE_DIR OR NOT CASES OR NOT WORK)
  message(FATAL_ERROR "layering_test.cmake needs CXX, SOURCE_DIR, CASES and WORK")
endif()
file(MAKE_DIRECTORY ${WORK})
set(failures 0)
set(checks 0)

# Preprocesses `#include "<header>"` with -I<dir> for each of dirs; rc and output out.
function(preprocess header dirs rc_var out_var)
  set(flags "")
  foreach(dir IN LISTS dirs)
    list(APPEND flags "-I${dir}")
  endforeach()
  # The probe's own folder is searched first for a quoted include: WORK holds no header.
  string(MAKE_C_IDENTIFIER "${header}" probe)
  file(WRITE ${WORK}/${probe}.cpp "#include \"${header}\"\n")
  execute_process(COMMAND ${CXX} -std=c++20 -E -o /dev/null ${flags} ${WORK}/${probe}.cpp
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  set(${rc_var} ${rc} PARENT_SCOPE)
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

function(fail text)
  message(SEND_ERROR "FAIL: ${text}")
  math(EXPR n "${failures} + 1")
  set(failures ${n} PARENT_SCOPE)
endfunction()

macro(layering_case target what allowed forbidden dirs)
  foreach(header IN ITEMS ${allowed})
    preprocess(${header} "${dirs}" rc out)
    math(EXPR checks "${checks} + 1")
    if(rc EQUAL 0)
      message(STATUS "ok: ${target} (${what}) includes ${header}")
    else()
      fail("${target} (${what}) cannot include ${header}, which it may:\n${out}")
    endif()
  endforeach()
  foreach(header IN ITEMS ${forbidden})
    math(EXPR checks "${checks} + 1")
    if(NOT EXISTS ${SOURCE_DIR}/${header})
      fail("${header} is not in the source tree: the case against ${target} proves nothing")
      continue()
    endif()
    preprocess(${header} "${dirs}" rc out)
    string(REPLACE "." "\\." pattern "${header}")
    if(rc EQUAL 0)
      fail("${target} (${what}) includes ${header}, which the layering forbids")
    elseif(out MATCHES "${pattern}: No such file|'${pattern}' file not found")  # gcc, clang
      message(STATUS "ok: ${target} (${what}) cannot include ${header}")
    else()
      fail("${target} (${what}): ${header} failed for another reason than not found:\n${out}")
    endif()
  endforeach()
endmacro()

include(${CASES})
if(failures GREATER 0 OR checks EQUAL 0)
  message(FATAL_ERROR "${failures} of ${checks} layering checks failed")
endif()
message(STATUS "${checks} layering checks passed")
