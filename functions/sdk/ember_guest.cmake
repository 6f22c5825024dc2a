# ember_guest.cmake - build ember functions as microVM guest images.
#
#   include(path/to/functions/sdk/ember.cmake)        # ember_add_package
#   include(path/to/functions/sdk/ember_guest.cmake)
#   ember_add_microvm_function(NAME hello SOURCES hello.c [MANIFEST function.json]
#                              [PACKAGE_DIR <dir>])
#
# compiles the sources together with the guest runtime (functions/sdk/guest:
# entry point, hypercalls, the ember.h accessors and a small libc) into a
# static ELF, hello.elf, and packs it with function.json into
# <PACKAGE_DIR>/hello-vm.tar.gz (default ${CMAKE_BINARY_DIR}/examples).
# Without MANIFEST the generated function.json is
#   {"runtime": "native", "sandbox": "microvm", "handler": "hello.elf"}
# and a given one must say "sandbox": "microvm" and name hello.elf.
#
# Guest code is compiled with its own flag set, by custom commands, so that
# nothing of the host build (sanitizers, -fPIC, the project's options) leaks
# into it. It targets the x86-64 baseline: SSE2, no AVX.
#
# The same without CMake (GI = `cc -print-file-name=include`, S = functions/sdk):
#   CFLAGS="-std=gnu11 -O2 -ffreestanding -nostdinc -isystem $GI -I$S/guest/include \
#     -I$S/guest -I$S -fno-pic -fno-pie -fno-stack-protector -mno-red-zone \
#     -march=x86-64 -mtune=generic -mno-avx -mno-avx2 -fno-asynchronous-unwind-tables \
#     -fno-tree-loop-distribute-patterns"
#   cc $CFLAGS -c $S/guest/start.S $S/guest/runtime.c $S/guest/libc.c hello.c
#   cc -nostdlib -static -no-pie -Wl,-T,$S/guest/guest.ld -Wl,-z,noexecstack \
#     -Wl,--build-id=none -o hello.elf start.o runtime.o libc.o hello.o -lgcc
#   tar czf hello-vm.tar.gz function.json hello.elf
#
# Building block: ember_add_guest(<target> SOURCES <files> [OUTPUT_NAME <n>]
#   [OUTPUT_DIR <dir>] [INCLUDES <dirs>]) makes <OUTPUT_DIR>/<n>.elf (default
#   <target>.elf in the current binary dir); the path is returned in
#   EMBER_GUEST_<target>.

set(EMBER_GUEST_SDK_DIR ${CMAKE_CURRENT_LIST_DIR} CACHE INTERNAL "ember SDK (guest)")

if(NOT DEFINED EMBER_GUEST_CC)
  set(EMBER_GUEST_CC ${CMAKE_C_COMPILER})
endif()
execute_process(COMMAND ${EMBER_GUEST_CC} -print-file-name=include
                OUTPUT_VARIABLE EMBER_GUEST_CC_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE)

set(EMBER_GUEST_CFLAGS
    -std=gnu11 -O2 -ffreestanding -nostdinc -isystem ${EMBER_GUEST_CC_INCLUDE}
    -I${EMBER_GUEST_SDK_DIR}/guest/include -I${EMBER_GUEST_SDK_DIR}/guest
    -I${EMBER_GUEST_SDK_DIR} -fno-pic -fno-pie -fno-stack-protector -mno-red-zone
    -march=x86-64 -mtune=generic -mno-avx -mno-avx2 -fno-asynchronous-unwind-tables
    -fno-tree-loop-distribute-patterns -Wall -Wextra)
if(EMBER_WERROR)
  list(APPEND EMBER_GUEST_CFLAGS -Werror)
endif()
set(EMBER_GUEST_LDFLAGS -nostdlib -static -no-pie
    -Wl,-T,${EMBER_GUEST_SDK_DIR}/guest/guest.ld -Wl,-z,noexecstack -Wl,--build-id=none)
set(EMBER_GUEST_RUNTIME ${EMBER_GUEST_SDK_DIR}/guest/start.S
    ${EMBER_GUEST_SDK_DIR}/guest/runtime.c ${EMBER_GUEST_SDK_DIR}/guest/libc.c)

function(ember_add_guest tgt)
  cmake_parse_arguments(G "" "OUTPUT_NAME;OUTPUT_DIR" "SOURCES;INCLUDES" ${ARGN})
  if(NOT G_SOURCES)
    message(FATAL_ERROR "ember_add_guest(${tgt}): SOURCES is required")
  endif()
  if(NOT G_OUTPUT_NAME)
    set(G_OUTPUT_NAME ${tgt})
  endif()
  if(NOT G_OUTPUT_DIR)
    set(G_OUTPUT_DIR ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  set(objdir ${CMAKE_CURRENT_BINARY_DIR}/ember-guest/${tgt})
  set(incs)
  foreach(d ${G_INCLUDES})
    list(APPEND incs -I${d})
  endforeach()
  set(objs)
  foreach(src ${EMBER_GUEST_RUNTIME} ${G_SOURCES})
    get_filename_component(abs ${src} ABSOLUTE)
    get_filename_component(base ${src} NAME)
    set(obj ${objdir}/${base}.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${objdir}
      COMMAND ${EMBER_GUEST_CC} ${EMBER_GUEST_CFLAGS} ${incs} -MD -MF ${obj}.d -c ${abs}
              -o ${obj}
      DEPENDS ${abs}
      DEPFILE ${obj}.d
      COMMENT "Compiling guest object ${base} (${tgt})"
      VERBATIM)
    list(APPEND objs ${obj})
  endforeach()
  set(out ${G_OUTPUT_DIR}/${G_OUTPUT_NAME}.elf)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${G_OUTPUT_DIR}
    COMMAND ${EMBER_GUEST_CC} ${EMBER_GUEST_LDFLAGS} -o ${out} ${objs} -lgcc
    DEPENDS ${objs} ${EMBER_GUEST_SDK_DIR}/guest/guest.ld
    COMMENT "Linking guest image ${G_OUTPUT_NAME}.elf"
    VERBATIM)
  add_custom_target(${tgt} ALL DEPENDS ${out})
  set(EMBER_GUEST_${tgt} ${out} PARENT_SCOPE)
endfunction()

function(ember_add_microvm_function)
  cmake_parse_arguments(F "" "NAME;MANIFEST;PACKAGE_DIR" "SOURCES" ${ARGN})
  if(NOT F_NAME OR NOT F_SOURCES)
    message(FATAL_ERROR "ember_add_microvm_function: NAME and SOURCES are required")
  endif()
  if(NOT COMMAND ember_add_package)
    include(${EMBER_GUEST_SDK_DIR}/ember.cmake)
  endif()
  set(tgt ember_vm_${F_NAME})
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/ember-vm/${F_NAME})
  ember_add_guest(${tgt} SOURCES ${F_SOURCES} OUTPUT_NAME ${F_NAME} OUTPUT_DIR ${dir})
  if(NOT F_MANIFEST)
    set(F_MANIFEST ${dir}/function.json)
    file(WRITE ${F_MANIFEST}.in "{ \"runtime\": \"native\", \"sandbox\": \"microvm\", "
                                "\"handler\": \"${F_NAME}.elf\" }\n")
    configure_file(${F_MANIFEST}.in ${F_MANIFEST} COPYONLY)
  endif()
  set(pkgdir_arg)
  if(F_PACKAGE_DIR)
    set(pkgdir_arg PACKAGE_DIR ${F_PACKAGE_DIR})
  endif()
  ember_add_package(NAME ${F_NAME}-vm MANIFEST ${F_MANIFEST} FILES ${dir}/${F_NAME}.elf
                    DEPENDS ${tgt} ${pkgdir_arg})
  set(EMBER_PACKAGE_${F_NAME}-vm ${EMBER_PACKAGE_${F_NAME}-vm} PARENT_SCOPE)
endfunction()
