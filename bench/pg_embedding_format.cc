// How to keep embeddings in PostgreSQL: bytea (little-endian float32, what nearlabel stores)
// against real[] (float4 array). Both go through libpq's binary protocol the way the store
// does: batches of 32 rows, one INSERT with binary parameters per batch, and the whole
// table read back through a binary cursor into one float matrix. Prints insert and read
// throughput and the table size for each, on the same random unit vectors.
// Usage: pg_embedding_format URI [ROWS=20000] [DIMS=1280]   (bench/pg_ingest.sh runs it)
#include <endian.h>
#include <libpq-fe.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

PGresult* Must(PGconn* c, PGresult* r, const char* what) {
  const ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::fprintf(stderr, "%s: %s", what, PQerrorMessage(c));
    std::exit(1);
  }
  return r;
}

void Put32(std::string* out, uint32_t v) {
  v = htobe32(v);
  out->append(reinterpret_cast<const char*>(&v), 4);
}

// A binary one-dimensional array (array_recv format) of `n` elements produced by `element`.
template <typename F>
std::string Array(uint32_t oid, size_t n, const F& element) {
  std::string out;
  Put32(&out, 1);
  Put32(&out, 0);
  Put32(&out, oid);
  Put32(&out, static_cast<uint32_t>(n));
  Put32(&out, 1);
  for (size_t i = 0; i < n; ++i) element(i, &out);
  return out;
}

struct Figures {
  double insert_s = 0, read_s = 0;
  long long bytes = 0;
};

Figures Run(PGconn* c, bool as_bytea, const std::vector<float>& data, int rows, int dims) {
  const char* table = as_bytea ? "fmt_bytea" : "fmt_real";
  PQclear(Must(c, PQexec(c, (std::string("DROP TABLE IF EXISTS ") + table).c_str()), "drop"));
  std::string create = std::string("CREATE TABLE ") + table + " (id bigint PRIMARY KEY, e " +
                       (as_bytea ? "bytea" : "real[]") + " NOT NULL)";
  PQclear(Must(c, PQexec(c, create.c_str()), "create"));
  if (as_bytea) {
    PQclear(
        Must(c, PQexec(c, "ALTER TABLE fmt_bytea ALTER COLUMN e SET STORAGE EXTERNAL"), "alter"));
  } else {
    PQclear(
        Must(c, PQexec(c, "ALTER TABLE fmt_real ALTER COLUMN e SET STORAGE EXTERNAL"), "alter"));
  }
  Figures f;
  auto t0 = Clock::now();
  // One statement per batch of 32 rows, VALUES ($1, $2), ($3, $4), ... with binary
  // parameters: int8, and the vector as bytea or as a binary float4 array.
  for (int b = 0; b < rows; b += 32) {
    const int n = std::min(32, rows - b);
    std::string sql = std::string("INSERT INTO ") + table + " VALUES ";
    std::vector<std::string> params;
    for (int i = 0; i < n; ++i) {
      sql += (i ? ", ($" : "($") + std::to_string(2 * i + 1) + "::bigint, $" +
             std::to_string(2 * i + 2) + (as_bytea ? "::bytea)" : "::real[])");
      uint64_t id = htobe64(static_cast<uint64_t>(b + i));
      params.emplace_back(reinterpret_cast<const char*>(&id), 8);
      const float* v = &data[static_cast<size_t>(b + i) * dims];
      if (as_bytea) {
        params.emplace_back(reinterpret_cast<const char*>(v), static_cast<size_t>(dims) * 4);
      } else {
        params.push_back(Array(700, static_cast<size_t>(dims), [&](size_t d, std::string* o) {
          Put32(o, 4);
          uint32_t bits;
          std::memcpy(&bits, &v[d], 4);
          Put32(o, bits);
        }));
      }
    }
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (const std::string& p : params) {
      values.push_back(p.data());
      lengths.push_back(static_cast<int>(p.size()));
      formats.push_back(1);
    }
    PQclear(Must(c,
                 PQexecParams(c, sql.c_str(), static_cast<int>(params.size()), nullptr,
                              values.data(), lengths.data(), formats.data(), 0),
                 "insert"));
  }
  f.insert_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string size = std::string("SELECT pg_total_relation_size('") + table + "')";
  PGresult* r = Must(c, PQexec(c, size.c_str()), "size");
  f.bytes = std::atoll(PQgetvalue(r, 0, 0));
  PQclear(r);

  t0 = Clock::now();
  PQclear(Must(c, PQexec(c, "BEGIN"), "begin"));
  std::string declare =
      std::string("DECLARE cur NO SCROLL CURSOR FOR SELECT e FROM ") + table + " ORDER BY id";
  PQclear(Must(c, PQexec(c, declare.c_str()), "declare"));
  std::vector<float> back;
  back.reserve(data.size());
  for (;;) {
    PGresult* chunk =
        Must(c, PQexecParams(c, "FETCH 4096 FROM cur", 0, nullptr, nullptr, nullptr, nullptr, 1),
             "fetch");
    const int n = PQntuples(chunk);
    for (int i = 0; i < n; ++i) {
      const char* v = PQgetvalue(chunk, i, 0);
      if (as_bytea) {
        const float* p = reinterpret_cast<const float*>(v);
        back.insert(back.end(), p, p + dims);
      } else {
        // Binary real[]: 20-byte header, then per element a length and a big-endian float.
        const char* p = v + 20;
        for (int d = 0; d < dims; ++d, p += 8) {
          uint32_t bits;
          std::memcpy(&bits, p + 4, 4);
          bits = be32toh(bits);
          float x;
          std::memcpy(&x, &bits, 4);
          back.push_back(x);
        }
      }
    }
    PQclear(chunk);
    if (n == 0) break;
  }
  PQclear(Must(c, PQexec(c, "COMMIT"), "commit"));
  f.read_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (back != data) {
    std::fprintf(stderr, "%s: vectors did not round-trip\n", table);
    std::exit(1);
  }
  PQclear(Must(c, PQexec(c, (std::string("DROP TABLE ") + table).c_str()), "drop"));
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: pg_embedding_format URI [ROWS] [DIMS]\n");
    return 2;
  }
  const int rows = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int dims = argc > 3 ? std::atoi(argv[3]) : 1280;
  PGconn* c = PQconnectdb(argv[1]);
  if (PQstatus(c) != CONNECTION_OK) {
    std::fprintf(stderr, "%s", PQerrorMessage(c));
    return 1;
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> g;
  std::vector<float> data(static_cast<size_t>(rows) * dims);
  for (int i = 0; i < rows; ++i) {
    double s = 0;
    for (int d = 0; d < dims; ++d) s += std::pow(data[i * dims + d] = g(rng), 2);
    for (int d = 0; d < dims; ++d) data[i * dims + d] /= static_cast<float>(std::sqrt(s));
  }
  const Figures bytea = Run(c, true, data, rows, dims);
  const Figures real = Run(c, false, data, rows, dims);
  std::printf("%d x %d-d unit vectors, batches of 32, binary protocol both ways\n", rows, dims);
  std::printf("  %-22s %10s %10s %10s\n", "", "insert/s", "read/s", "MB");
  auto line = [&](const char* name, const Figures& f) {
    std::printf("  %-22s %10.0f %10.0f %10.1f\n", name, rows / f.insert_s, rows / f.read_s,
                f.bytes / 1048576.0);
  };
  line("bytea (nearlabel)", bytea);
  line("real[] (baseline)", real);
  PQfinish(c);
  return 0;
}
