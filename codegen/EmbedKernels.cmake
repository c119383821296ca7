# Writes OUTPUT: one C++ initializer {"sparsetx/<file>", R"(...)"} per kernel
# header in INPUTS (a ;-list of absolute paths), so that the library carries
# the CUDA sources and NVRTC needs no files at run time.
set(_text "// Generated from codegen/kernels/*.cuh by EmbedKernels.cmake. Do not edit.\n")
foreach(_file IN LISTS INPUTS)
  get_filename_component(_name "${_file}" NAME)
  file(READ "${_file}" _contents)
  string(FIND "${_contents}" ")sparsetx_cuh\"" _clash)
  if(NOT _clash EQUAL -1)
    message(FATAL_ERROR "${_file} contains the raw-string delimiter")
  endif()
  string(APPEND _text "{\"sparsetx/${_name}\", R\"sparsetx_cuh(${_contents})sparsetx_cuh\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "${_text}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
