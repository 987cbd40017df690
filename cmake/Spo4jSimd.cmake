# spo4j_simd(target): flags for the CPU kernels. No -march=native: the shipped library must
# run on any x86-64. Hot loops are compiled several times with GCC's target_clones
# (AVX-512 / AVX2+FMA / baseline) and the loader's ifunc picks one at run time
# (see native/cpu/simd.h). -fno-math-errno/-fno-trapping-math let loops with
# selects vectorise; -Wno-psabi: the 64-byte vector helpers are always inlined, so
# no vector crosses a call boundary. We keep IEEE semantics otherwise (no -ffast-math: we rely on inf/NaN).
function(spo4j_simd target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-O3 -fno-math-errno -fno-trapping-math -fno-semantic-interposition -Wno-psabi>)
endfunction()
