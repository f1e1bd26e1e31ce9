# One place for compiler warnings (after curl's PickyWarnings.cmake).
# Warnings are errors: a warning is a bug we have not understood yet.
function(ferry_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Werror
    -Wstrict-prototypes -Wmissing-prototypes -Wshadow
    -Wformat=2 -Wvla -Wpointer-arith -Wcast-qual -Wundef)
endfunction()
