# chatgate-sdk: what a plugin built out of tree needs (installed by
# chatgate-dev to /usr/lib/cmake/chatgate-sdk/).
#
#   find_package(chatgate-sdk 1.0 REQUIRED)
#   chatgate_add_plugin(myplugin myplugin.c)   # -> myplugin.so
#
# chatgate::sdk carries the include path; chatgate_add_plugin makes a MODULE
# named <name>.so (no "lib"), built with hidden visibility and a version
# script, so that it exports cg_plugin_entry and nothing else.
get_filename_component(_chatgate_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET chatgate::sdk)
  add_library(chatgate::sdk INTERFACE IMPORTED)
  set_target_properties(chatgate::sdk PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_chatgate_prefix}/include")
endif()
set(CHATGATE_SDK_PLUGIN_MAP "${CMAKE_CURRENT_LIST_DIR}/plugin.map")

function(chatgate_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE chatgate::sdk)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(${name} PRIVATE -Wl,--no-undefined
                      -Wl,--version-script=${CHATGATE_SDK_PLUGIN_MAP})
endfunction()
