// What the PostgreSQL store does without a server: masking and connection errors. The store
// against a real PostgreSQL 15 server is tests/postgres_test.sh (a throw-away cluster).
#include <gtest/gtest.h>

#include "nearlabel/store.h"

namespace nearlabel {
namespace {

TEST(PostgresStoreTest, PasswordsAreMaskedInLocations) {
  EXPECT_EQ(MaskedLocation("postgresql://ann:s3cret@db.example:5432/photos"),
            "postgresql://ann:***@db.example:5432/photos");
  EXPECT_EQ(MaskedLocation("postgres://ann@db/photos?sslmode=require&password=pw&x=1"),
            "postgres://ann@db/photos?sslmode=require&password=***&x=1");
  EXPECT_EQ(MaskedLocation("postgresql://db/photos"), "postgresql://db/photos");
  // '@' or ':' later in the URI (a query value) are not credentials.
  EXPECT_EQ(MaskedLocation("postgresql://db/photos?application_name=a:b@c"),
            "postgresql://db/photos?application_name=a:b@c");
  EXPECT_EQ(MaskedLocation("/data/photos:1@x.db"), "/data/photos:1@x.db");  // a file path
  EXPECT_TRUE(IsPostgresUri("postgres://x"));
  EXPECT_FALSE(IsPostgresUri("postgresql.db"));
}

TEST(PostgresStoreTest, AnUnreachableServerIsAClearErrorWithoutThePassword) {
  // Port 1 on loopback: nothing listens, the connection is refused at once.
  auto s = OpenStore("postgresql://ann:s3cret@127.0.0.1:1/photos?connect_timeout=2",
                     Store::Mode::kReadOnly);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kIOError);
  EXPECT_NE(s.status().message().find("cannot connect to PostgreSQL at postgresql://ann:***@"),
            std::string::npos)
      << s.status().message();
  EXPECT_EQ(s.status().message().find("s3cret"), std::string::npos);
  auto m = RunPostgresMigrations("postgresql://127.0.0.1:1/photos", nullptr);
  EXPECT_FALSE(m.ok());
}

}  // namespace
}  // namespace nearlabel
