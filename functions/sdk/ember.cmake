# ember.cmake - build and package ember functions.
#
#   include(path/to/functions/sdk/ember.cmake)
#   ember_add_function(NAME hello SOURCES hello.c [MANIFEST function.json]
#                      [PACKAGE_DIR <dir>])
#
# builds the native handler hello.so and packs it with function.json into
# <PACKAGE_DIR>/hello.tar.gz (default ${CMAKE_BINARY_DIR}/examples), ready for
# `PUT /v1/functions/hello`. Without MANIFEST a minimal function.json is
# generated ({"runtime": "native", "handler": "hello.so"}); a given manifest's
# "handler" must name <NAME>.so.
#
# The same steps without CMake:
#   cc -std=c11 -O2 -fPIC -shared -fvisibility=hidden \
#      -I<ember>/functions/sdk -o hello.so hello.c
#   tar czf hello.tar.gz function.json hello.so
#
# Building blocks, usable on their own:
#   ember_add_handler(<target> SOURCES <files> [OUTPUT_NAME <n>] [OUTPUT_DIR <dir>])
#       a native handler <OUTPUT_DIR>/<n>.so (default: <target>.so in the
#       current binary dir). ember.h declares ember_handle and ember_init with
#       default visibility, so -fvisibility=hidden keeps everything else local.
#   ember_add_package(NAME <name> MANIFEST <json> [FILES <paths>]
#                     [DEPENDS <targets>] [PACKAGE_DIR <dir>])
#       a custom target ember_pkg_<name> producing <PACKAGE_DIR>/<name>.tar.gz
#       from function.json and FILES (copied with their permission bits, so an
#       exec handler keeps its x bit). The output path is returned in
#       EMBER_PACKAGE_<name>.
#
# Extending (a second artefact from the same sources, e.g. a microVM guest):
# add a builder next to ember_add_handler and pass its output through FILES
# and its target through DEPENDS of ember_add_package.

set(EMBER_SDK_DIR ${CMAKE_CURRENT_LIST_DIR} CACHE INTERNAL "ember SDK headers")

function(ember_add_handler tgt)
  cmake_parse_arguments(H "" "OUTPUT_NAME;OUTPUT_DIR" "SOURCES" ${ARGN})
  if(NOT H_SOURCES)
    message(FATAL_ERROR "ember_add_handler(${tgt}): SOURCES is required")
  endif()
  if(NOT H_OUTPUT_NAME)
    set(H_OUTPUT_NAME ${tgt})
  endif()
  if(NOT H_OUTPUT_DIR)
    set(H_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  # MODULE: a dlopen()-only object; undefined ember_* accessors are resolved
  # against the loading runtime at load time.
  add_library(${tgt} MODULE ${H_SOURCES})
  set_target_properties(${tgt} PROPERTIES
    PREFIX "" SUFFIX ".so" OUTPUT_NAME ${H_OUTPUT_NAME}
    LIBRARY_OUTPUT_DIRECTORY ${H_OUTPUT_DIR}
    C_VISIBILITY_PRESET hidden POSITION_INDEPENDENT_CODE ON)
  if(TARGET ember_sdk)
    target_link_libraries(${tgt} PRIVATE ember_sdk)
  else()
    target_include_directories(${tgt} PRIVATE ${EMBER_SDK_DIR})
  endif()
  # Inside the ember tree, functions get the project's warning set too, but
  # not its sanitizers: a function is user code loaded into the agent, and a
  # sanitized object cannot load into an unsanitized agent (nor would a
  # deliberate crash stay a crash).
  if(COMMAND ember_target)
    ember_target(${tgt})
  endif()
  if(EMBER_SAN_FLAGS)
    foreach(prop COMPILE_OPTIONS LINK_OPTIONS)
      get_target_property(opts ${tgt} ${prop})
      if(opts)
        list(REMOVE_ITEM opts ${EMBER_SAN_FLAGS})
        set_target_properties(${tgt} PROPERTIES ${prop} "${opts}")
      endif()
    endforeach()
  endif()
endfunction()

function(ember_add_package)
  cmake_parse_arguments(P "" "NAME;MANIFEST;PACKAGE_DIR" "FILES;DEPENDS" ${ARGN})
  if(NOT P_NAME OR NOT P_MANIFEST)
    message(FATAL_ERROR "ember_add_package: NAME and MANIFEST are required")
  endif()
  if(NOT P_PACKAGE_DIR)
    set(P_PACKAGE_DIR ${CMAKE_BINARY_DIR}/examples)
  endif()
  set(stage ${CMAKE_CURRENT_BINARY_DIR}/ember-pkg/${P_NAME})
  set(out ${P_PACKAGE_DIR}/${P_NAME}.tar.gz)
  set(names function.json)
  set(copies COMMAND ${CMAKE_COMMAND} -E copy ${P_MANIFEST} ${stage}/function.json)
  foreach(f ${P_FILES})
    get_filename_component(n ${f} NAME)
    list(APPEND names ${n})
    list(APPEND copies COMMAND ${CMAKE_COMMAND} -E copy ${f} ${stage}/${n})
  endforeach()
  # The archive names its files, so nothing else lying in the stage gets in.
  file(MAKE_DIRECTORY ${stage})
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${P_PACKAGE_DIR}
    ${copies}
    COMMAND ${CMAKE_COMMAND} -E tar czf ${out} ${names}
    WORKING_DIRECTORY ${stage}
    DEPENDS ${P_MANIFEST} ${P_FILES} ${P_DEPENDS}
    COMMENT "Packaging ember function ${P_NAME}"
    VERBATIM)
  add_custom_target(ember_pkg_${P_NAME} DEPENDS ${out})
  if(P_DEPENDS)
    add_dependencies(ember_pkg_${P_NAME} ${P_DEPENDS})
  endif()
  set(EMBER_PACKAGE_${P_NAME} ${out} PARENT_SCOPE)
endfunction()

function(ember_add_function)
  cmake_parse_arguments(F "" "NAME;MANIFEST;PACKAGE_DIR" "SOURCES" ${ARGN})
  if(NOT F_NAME OR NOT F_SOURCES)
    message(FATAL_ERROR "ember_add_function: NAME and SOURCES are required")
  endif()
  set(tgt ember_fn_${F_NAME})
  set(sodir ${CMAKE_CURRENT_BINARY_DIR}/ember-fn/${F_NAME})
  ember_add_handler(${tgt} SOURCES ${F_SOURCES} OUTPUT_NAME ${F_NAME} OUTPUT_DIR ${sodir})
  if(NOT F_MANIFEST)
    set(F_MANIFEST ${sodir}/function.json)
    file(WRITE ${F_MANIFEST}.in
         "{ \"runtime\": \"native\", \"handler\": \"${F_NAME}.so\" }\n")
    configure_file(${F_MANIFEST}.in ${F_MANIFEST} COPYONLY)
  endif()
  set(pkgdir_arg)
  if(F_PACKAGE_DIR)
    set(pkgdir_arg PACKAGE_DIR ${F_PACKAGE_DIR})
  endif()
  ember_add_package(NAME ${F_NAME} MANIFEST ${F_MANIFEST}
                    FILES ${sodir}/${F_NAME}.so DEPENDS ${tgt} ${pkgdir_arg})
  set(EMBER_PACKAGE_${F_NAME} ${EMBER_PACKAGE_${F_NAME}} PARENT_SCOPE)
endfunction()
