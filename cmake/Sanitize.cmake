# FERRY_SANITIZE=address,undefined  or  FERRY_SANITIZE=thread
# (libuv's ASAN/TSAN options, Redis's SANITIZER=). Applies to every target.
set(FERRY_SANITIZE "" CACHE STRING "Comma-separated sanitizers (address,undefined | thread)")
if(FERRY_SANITIZE)
  string(REPLACE "," ";" _san_list "${FERRY_SANITIZE}")
  foreach(_san ${_san_list})
    add_compile_options(-fsanitize=${_san})
    add_link_options(-fsanitize=${_san})
  endforeach()
  add_compile_options(-fno-omit-frame-pointer -fno-sanitize-recover=undefined)
endif()
