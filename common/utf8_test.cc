#include "common/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace tcm {
namespace {

TEST(Utf8Test, DecodesValidCharactersAndRefusesTheRest) {
  EXPECT_EQ(DecodeUtf8("A").code, 0x41u);
  EXPECT_EQ(DecodeUtf8("\xc3\xa9").code, 0xe9u);
  EXPECT_EQ(DecodeUtf8("\xc3\xa9").length, 2u);
  EXPECT_EQ(DecodeUtf8("\xf4\x8f\xbf\xbf").code, 0x10ffffu);
  EXPECT_EQ(DecodeUtf8("\xf4\x8f\xbf\xbf").length, 4u);
  for (const std::string& bad :
       {std::string(), std::string("\x80"), std::string("\xc0\xaf"), std::string("\xe0\x80\xaf"),
        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("\xe2\x82")})
    EXPECT_EQ(DecodeUtf8(bad).length, 0u) << "bytes: " << bad.size();
}

TEST(Utf8Test, PrintableTextHasNoControlCharacters) {
  EXPECT_TRUE(IsPrintableUtf8("Ankle boot \xe2\x80\x94 <b>"));
  EXPECT_TRUE(IsPrintableUtf8(""));
  EXPECT_FALSE(IsPrintableUtf8("a\nb"));
  EXPECT_FALSE(IsPrintableUtf8("a\x7f"));
  EXPECT_FALSE(IsPrintableUtf8("a\xc2\x85"));  // U+0085, a C1 control
  EXPECT_FALSE(IsPrintableUtf8("a\xff"));
}

TEST(Utf8Test, PrintableLineEscapesWhatCouldEndOrForgeALine) {
  EXPECT_EQ(PrintableLine("model 'caf\xc3\xa9'"), "model 'caf\xc3\xa9'");
  EXPECT_EQ(PrintableLine("a\ntcm-server: model 'x' loaded"), "a\\x0atcm-server: model 'x' loaded");
  EXPECT_EQ(PrintableLine("\x1b[2J\r"), "\\x1b[2J\\x0d");
  EXPECT_EQ(PrintableLine("\xc2\x85|\xff|\\x0a"), "\\xc2\\x85|\\xff|\\\\x0a");  // a literal \x0a reads back as itself
}

}  // namespace
}  // namespace tcm
