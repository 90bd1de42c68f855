# SPDX-License-Identifier: Apache-2.0
# Run by `cmake --install` (install(CODE) in CMakeLists.txt): writes estimatord.service for
# the prefix of *this* install, which `cmake --install --prefix` may change after configure,
# and installs the options file unless the operator already has one.
# In: unit_template, unit_output, bindir, sysconfdir (GNUInstallDirs' values).
foreach(dir bindir sysconfdir)
  if(IS_ABSOLUTE "${${dir}}")
    set(full_${dir} "${${dir}}")
  else()
    set(full_${dir} "${CMAKE_INSTALL_PREFIX}/${${dir}}")
  endif()
endforeach()
# GNUInstallDirs' rule: a /usr install reads its configuration from /etc, not /usr/etc.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" AND NOT IS_ABSOLUTE "${sysconfdir}")
  set(full_sysconfdir "/${sysconfdir}")
endif()
set(CMAKE_INSTALL_FULL_BINDIR "${full_bindir}")
set(ESTIMATOR_ENV_FILE "${full_sysconfdir}/default/estimatord")
configure_file("${unit_template}" "${unit_output}" @ONLY)

if(EXISTS "$ENV{DESTDIR}${ESTIMATOR_ENV_FILE}")
  message(STATUS "Keeping: $ENV{DESTDIR}${ESTIMATOR_ENV_FILE}")
else()
  # file(INSTALL) adds DESTDIR itself and records the file in install_manifest.txt.
  file(INSTALL "${env_source}" DESTINATION "${full_sysconfdir}/default" RENAME estimatord)
endif()
