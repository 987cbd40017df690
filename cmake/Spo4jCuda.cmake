# Optional CUDA. SPO4J_CUDA=AUTO (default) builds native/cuda when a CUDA compiler is found,
# ON requires one, OFF skips it. Sets SPO4J_HAVE_CUDA and defines spo4j_cuda_kernels().
set(SPO4J_CUDA AUTO CACHE STRING "Build the CUDA kernels: AUTO, ON or OFF")
set(SPO4J_HAVE_CUDA OFF)
if(NOT SPO4J_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # SASS for A100 (sm_80) and H100/H200 (sm_90), PTX of sm_90 for newer GPUs to JIT.
      set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(SPO4J_HAVE_CUDA ON)
    message(STATUS "spo4j: building CUDA kernels with ${CMAKE_CUDA_COMPILER} for ${CMAKE_CUDA_ARCHITECTURES}")
  elseif(SPO4J_CUDA STREQUAL "ON")
    message(FATAL_ERROR "spo4j: SPO4J_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "spo4j: no CUDA compiler found; CUDA entry points will report 'not built'")
  endif()
endif()

# spo4j_cuda_kernels(target): what a target holding the CUDA kernels (native/cuda, whose
# sources native/CMakeLists.txt lists) builds with. IEEE semantics: no --use_fast_math here;
# a source that wants it sets it on itself (see native/CMakeLists.txt).
function(spo4j_cuda_kernels target)
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/cuda")
  # Static cudart: the library loads where no CUDA runtime is installed; calls then fail
  # with cudaErrorInsufficientDriver / cudaErrorNoDevice, which we report.
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Static)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo -Xcompiler=-fvisibility=hidden>)
endfunction()
