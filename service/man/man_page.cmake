# SPDX-License-Identifier: Apache-2.0
# Writes a man page from a program's own --help, so that the page never disagrees with the
# options the program accepts. Run at build time with cmake -P:
#   -DPROGRAM=<binary> -DNAME=<name> -DOUTPUT=<file.1> -DVERSION=<x.y.z>
#   -DSEE_ALSO=<roff text> [-DEXTRA=<roff file appended before SEE ALSO>]
# Subcommands listed under "Subcommands:" get their own --help in a section each.
# Written here rather than with help2man: it is not a build dependency, and CLI11's help
# layout (options in columns, subcommands) maps onto a page in a few lines.
cmake_minimum_required(VERSION 3.22)
foreach(var PROGRAM NAME OUTPUT VERSION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "man_page.cmake: ${var} is not set")
  endif()
endforeach()

# Runs the program with the given arguments and returns its help text. A sanitizer build may
# exit non-zero at exit (a leak report) after printing the help: the text is what matters.
function(help_of out_var)
  execute_process(COMMAND ${PROGRAM} ${ARGN} --help
    OUTPUT_VARIABLE text ERROR_QUIET RESULT_VARIABLE rc)
  if(NOT text MATCHES "Usage:")
    message(FATAL_ERROR "man_page.cmake: '${PROGRAM} ${ARGN} --help' printed no usage (exit ${rc})")
  endif()
  # CLI11 prints argv[0] (here a build path) and defaults computed for the building user
  # (the segment name estimator-<user>): a page shows what any reader would see.
  string(REGEX REPLACE "Usage: [^ \n]*/${NAME}" "Usage: ${NAME}" text "${text}")
  string(REGEX REPLACE "=estimator-[^ \n]+" "=estimator-USER" text "${text}")
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

# Roff escapes: a backslash is \e, a hyphen is \- (groff would print a Unicode hyphen,
# which cannot be pasted as an option), and a line starting with . or ' would be a request.
function(roff out_var text)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REPLACE "-" "\\-" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

help_of(help)
# CLI11's first line is "<name>: <description>"; the rest starts at "Usage:".
string(FIND "${help}" "Usage:" usage_at)
string(SUBSTRING "${help}" 0 ${usage_at} description)
string(SUBSTRING "${help}" ${usage_at} -1 body)
string(STRIP "${description}" description)
string(REGEX REPLACE "^${NAME}: *" "" description "${description}")
roff(description "${description}")
roff(body_roff "${body}")
string(TOUPPER "${NAME}" upper)

set(page ".\\\" Generated from '${NAME} --help' by service/man/man_page.cmake; do not edit.\n")
string(APPEND page ".TH ${upper} 1 \"\" \"estimator ${VERSION}\" \"User Commands\"\n")
string(APPEND page ".SH NAME\n${NAME} \\- ${description}\n")
string(APPEND page ".SH SYNOPSIS AND OPTIONS\n.nf\n${body_roff}.fi\n")

string(FIND "${body}" "Subcommands:" sub_at)
if(sub_at GREATER -1)
  string(SUBSTRING "${body}" ${sub_at} -1 subs)
  string(REGEX MATCHALL "\n  [a-z][a-z0-9_-]*" names "${subs}")
  string(APPEND page ".SH SUBCOMMANDS\n")
  foreach(sub IN LISTS names)
    string(STRIP "${sub}" sub)
    help_of(sub_help ${sub})
    roff(sub_roff "${sub_help}")
    string(APPEND page ".SS ${NAME} ${sub}\n.nf\n${sub_roff}.fi\n")
  endforeach()
endif()

string(APPEND page ".SH EXIT STATUS\n0 on success, 1 on a runtime failure, 2 on bad usage or input.\n")
if(DEFINED EXTRA)
  file(READ "${EXTRA}" extra)
  string(APPEND page "${extra}")
endif()
if(DEFINED SEE_ALSO)
  string(APPEND page ".SH SEE ALSO\n${SEE_ALSO}\n")
endif()
file(WRITE "${OUTPUT}" "${page}")
