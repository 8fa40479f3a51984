# Writes a C++ source that holds a file's bytes, for files compiled into a binary:
#   cmake -DINPUT=page.html -DOUTPUT=page_html.cc -DFUNCTION=PageHtml -P embed_file.cmake
# defines `std::string_view tcm::FUNCTION()` returning the bytes of INPUT.
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
     "// Generated at build time from ${name} by cmake/embed_file.cmake.\n"
     "#include <string_view>\n\n"
     "namespace tcm {\n"
     "namespace {\n"
     "constexpr char kBytes[] = {${bytes}};\n"
     "}  // namespace\n\n"
     "std::string_view ${FUNCTION}() { return {kBytes, sizeof(kBytes)}; }\n\n"
     "}  // namespace tcm\n")
# Only a changed file is rewritten, so that an unchanged page rebuilds nothing.
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
