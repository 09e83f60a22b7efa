# Install layout and the two Debian packages (CPack's DEB generator):
#   chatgate       /usr/bin/chatgate, /usr/lib/chatgate/plugins/*.so,
#                  /etc/chatgate/{chatgate.yaml,chatgate.env} (conffiles),
#                  /lib/systemd/system/{chatgate.service,chatgate-api.socket,
#                  chatgate-admin.socket}, the docs
#   chatgate-dev   /usr/include/chatgate/ (the SDK headers)
# `make deb` configures a build with CMAKE_INSTALL_PREFIX=/usr (the plugin
# directory compiled into the binary follows the prefix) and runs cpack.
set(CG_DEB_DIR ${CMAKE_SOURCE_DIR}/packaging/debian)

install(TARGETS chatgate RUNTIME DESTINATION bin COMPONENT runtime)
# The packaged config is the embedded default but for the language users
# read: the .deb's operators run bots for Chinese-speaking users (issue 19),
# while `make run` stays English so the README's example answer is what a
# reader sees.
set(CG_PACKAGED_CONFIG ${CMAKE_CURRENT_BINARY_DIR}/packaged/chatgate.yaml)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/config/chatgate.yaml)
file(READ ${CMAKE_SOURCE_DIR}/config/chatgate.yaml cg_config_text)
set(cg_locale_en "  locale: en             # what users read from chatgate itself: en or zh-CN\n                         # (the .deb's /etc/chatgate/chatgate.yaml says zh-CN)\n")
string(FIND "${cg_config_text}" "${cg_locale_en}" cg_locale_at)
if(cg_locale_at EQUAL -1)
  message(FATAL_ERROR "config/chatgate.yaml: the router.locale line the package rewrites is gone")
endif()
string(REPLACE "${cg_locale_en}"
       "  locale: zh-CN          # 用户看到的语言（zh-CN）；英文用户改为 en\n"
       cg_config_text "${cg_config_text}")
file(WRITE ${CG_PACKAGED_CONFIG} "${cg_config_text}")
install(FILES ${CG_PACKAGED_CONFIG} DESTINATION /etc/chatgate COMPONENT runtime)
install(FILES ${CG_DEB_DIR}/chatgate.env DESTINATION /etc/chatgate
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ COMPONENT runtime)
# The service and its two socket units (socket activation: systemd holds the
# listening sockets, so a restart refuses no connection).
install(FILES ${CG_DEB_DIR}/chatgate.service ${CG_DEB_DIR}/chatgate-api.socket
              ${CG_DEB_DIR}/chatgate-admin.socket
        DESTINATION /lib/systemd/system COMPONENT runtime)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/README.zh-CN.md
        DESTINATION share/doc/chatgate COMPONENT runtime)
# Debian wants a copyright file and a gzip'd changelog in each package's doc folder.
set(CG_CHANGELOG_GZ ${CMAKE_CURRENT_BINARY_DIR}/changelog.gz)
add_custom_command(OUTPUT ${CG_CHANGELOG_GZ}
                   COMMAND gzip -9n -c ${CG_DEB_DIR}/changelog > ${CG_CHANGELOG_GZ}
                   DEPENDS ${CG_DEB_DIR}/changelog)
# The man page, gzip'd as Debian wants it.
set(CG_MANPAGE_GZ ${CMAKE_CURRENT_BINARY_DIR}/chatgate.1.gz)
add_custom_command(OUTPUT ${CG_MANPAGE_GZ}
                   COMMAND gzip -9n -c ${CG_DEB_DIR}/chatgate.1 > ${CG_MANPAGE_GZ}
                   DEPENDS ${CG_DEB_DIR}/chatgate.1)
add_custom_target(cg_changelog ALL DEPENDS ${CG_CHANGELOG_GZ} ${CG_MANPAGE_GZ})
install(FILES ${CG_MANPAGE_GZ} DESTINATION share/man/man1 COMPONENT runtime)
foreach(pkg chatgate chatgate-dev)
  set(comp runtime)
  if(pkg STREQUAL "chatgate-dev")
    set(comp dev)
  endif()
  install(FILES ${CG_DEB_DIR}/copyright ${CG_CHANGELOG_GZ} DESTINATION share/doc/${pkg}
          COMPONENT ${comp})
endforeach()
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION share/doc/chatgate COMPONENT runtime)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/sdk/include/chatgate/ ${CMAKE_SOURCE_DIR}/sdk/cpp/chatgate/
        DESTINATION include/chatgate COMPONENT dev)
# The SDK's version is the plugin ABI's: find_package(chatgate-sdk 1.0)
# accepts any 1.x at least as new (SameMajorVersion).
file(READ ${CMAKE_SOURCE_DIR}/sdk/include/chatgate/common.h CG_COMMON_H)
string(REGEX MATCH "CG_ABI_MAJOR ([0-9]+)" _m "${CG_COMMON_H}")
set(CG_ABI_MAJOR_NUM ${CMAKE_MATCH_1})
string(REGEX MATCH "CG_ABI_MINOR ([0-9]+)" _m "${CG_COMMON_H}")
set(CG_SDK_VERSION "${CG_ABI_MAJOR_NUM}.${CMAKE_MATCH_1}")
include(CMakePackageConfigHelpers)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/chatgate-sdkConfigVersion.cmake
                                 VERSION ${CG_SDK_VERSION} COMPATIBILITY SameMajorVersion
                                 ARCH_INDEPENDENT)
configure_file(${CMAKE_SOURCE_DIR}/sdk/chatgate-sdk.pc.in
               ${CMAKE_CURRENT_BINARY_DIR}/chatgate-sdk.pc @ONLY)
install(FILES ${CMAKE_SOURCE_DIR}/sdk/cmake/chatgate-sdkConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/chatgate-sdkConfigVersion.cmake
              ${CMAKE_SOURCE_DIR}/sdk/plugin.map
        DESTINATION lib/cmake/chatgate-sdk COMPONENT dev)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/chatgate-sdk.pc DESTINATION share/pkgconfig
        COMPONENT dev)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/sdk/examples/ DESTINATION share/doc/chatgate-dev/examples
        COMPONENT dev)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME chatgate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "chatgate maintainers <maintainers@chatgate.invalid>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME chatgate)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME chatgate-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# Dependencies come from the binaries (dpkg-shlibdeps); libcurl is the one
# exception: chatgate dlopen()s it on first use, which dpkg-shlibdeps cannot
# see, so it is named here.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "adduser, libcurl4")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
    "${CG_DEB_DIR}/postinst;${CG_DEB_DIR}/prerm;${CG_DEB_DIR}/postrm;${CG_DEB_DIR}/conffiles")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
    "self-hosted chatbot gateway for DingTalk and Feishu\nchatgate routes messages between chat platforms (DingTalk, Feishu/Lark) and\nmodel backends (OpenAI-compatible services) on one libuv event loop, with\na Redis or in-memory cache, an admin page and Prometheus metrics.")
set(CPACK_DEBIAN_DEV_DESCRIPTION
    "chatgate plugin SDK (headers)\nThe C headers of chatgate's versioned plugin ABI, for writing channel,\nmodel and cache plugins out of tree.")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "")
include(CPack)
