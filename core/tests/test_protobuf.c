/* test_protobuf — core/protobuf.c: the wire format and descriptor sets, without Lua.
 * The descriptor sets are written here with the module's own writer (a FileDescriptorSet is a
 * protobuf message), so each test states exactly the schema it uses. */
#include <string.h>

#include "check.h"
#include "protobuf.h"

/* FieldDescriptorProto: name 1, number 3, label 4, type 5, type_name 6 */
static void field(nh_pb_buf_t *msg, const char *name, int number, int label, int type,
                  const char *type_name) {
    nh_pb_put_tag(msg, 2, NH_PB_LEN);
    size_t m = nh_pb_begin_len(msg);
    nh_pb_put_tag(msg, 1, NH_PB_LEN);
    nh_pb_put_bytes(msg, name, strlen(name));
    nh_pb_put_tag(msg, 3, NH_PB_VARINT);
    nh_pb_put_varint(msg, (uint64_t)number);
    nh_pb_put_tag(msg, 4, NH_PB_VARINT);
    nh_pb_put_varint(msg, (uint64_t)label);
    nh_pb_put_tag(msg, 5, NH_PB_VARINT);
    nh_pb_put_varint(msg, (uint64_t)type);
    if (type_name) {
        nh_pb_put_tag(msg, 6, NH_PB_LEN);
        nh_pb_put_bytes(msg, type_name, strlen(type_name));
    }
    nh_pb_end_len(msg, m);
}

/* package t; proto3; message M { int32 a = 1; string s = 2; M child = 3; repeated sint32 r = 4;
 * <extra> } */
static nh_pb_schema_t *load(int extra_type, const char *extra_type_name, char *err) {
    nh_pb_buf_t b = {0};
    nh_pb_put_tag(&b, 1, NH_PB_LEN); /* FileDescriptorSet.file */
    size_t file = nh_pb_begin_len(&b);
    nh_pb_put_tag(&b, 2, NH_PB_LEN);
    nh_pb_put_bytes(&b, "t", 1);
    nh_pb_put_tag(&b, 12, NH_PB_LEN);
    nh_pb_put_bytes(&b, "proto3", 6);
    nh_pb_put_tag(&b, 4, NH_PB_LEN); /* message_type */
    size_t msg = nh_pb_begin_len(&b);
    nh_pb_put_tag(&b, 1, NH_PB_LEN);
    nh_pb_put_bytes(&b, "M", 1);
    field(&b, "a", 1, 1, NH_PB_INT32, NULL);
    field(&b, "s", 2, 1, NH_PB_STRING, NULL);
    field(&b, "child", 3, 1, NH_PB_MESSAGE, ".t.M");
    field(&b, "r", 4, 3, NH_PB_SINT32, NULL);
    if (extra_type) field(&b, "x", 5, 1, extra_type, extra_type_name);
    nh_pb_end_len(&b, msg);
    nh_pb_end_len(&b, file);
    CHECK(!b.failed);
    nh_pb_schema_t *s = NULL;
    nh_pb_schema_load(&s, b.data, b.len, err, 200);
    nh_pb_buf_free(&b);
    return s;
}

typedef struct seen {
    int scalars, bytes, begins, ends;
    int64_t last_i;
    size_t last_len;
} seen_t;

static int on_scalar(void *ud, const nh_pb_field_t *f, nh_pb_scalar_t v) {
    (void)f;
    seen_t *s = ud;
    s->scalars++;
    s->last_i = v.i;
    return 0;
}
static int on_bytes(void *ud, const nh_pb_field_t *f, const uint8_t *p, size_t len) {
    (void)f, (void)p;
    seen_t *s = ud;
    s->bytes++;
    s->last_len = len;
    return 0;
}
static int on_begin(void *ud, const nh_pb_field_t *f) {
    (void)f;
    ((seen_t *)ud)->begins++;
    return 0;
}
static int on_end(void *ud, const nh_pb_field_t *f) {
    (void)f;
    ((seen_t *)ud)->ends++;
    return 0;
}
static const nh_pb_visitor_t counter = {on_scalar, on_bytes, on_begin, on_end};

static int decode(const nh_pb_message_t *m, const char *bytes, size_t len, seen_t *s) {
    memset(s, 0, sizeof *s);
    return nh_pb_decode(m, (const uint8_t *)bytes, len, &counter, s);
}

static void test_schema(void) {
    char err[200];
    nh_pb_schema_t *s = load(0, NULL, err);
    CHECK(s != NULL);
    const nh_pb_message_t *m = nh_pb_schema_message(s, "M");
    CHECK(m && m == nh_pb_schema_message(s, "t.M") && m == nh_pb_schema_message(s, ".t.M"));
    CHECK(nh_pb_schema_message(s, "N") == NULL);
    const nh_pb_field_t *r = nh_pb_field_by_name(m, "r");
    CHECK(r && r->repeated && r->packed && r->number == 4);
    const nh_pb_field_t *a = nh_pb_field_by_number(m, 1);
    CHECK(a && !a->presence && strcmp(a->name, "a") == 0);
    CHECK(nh_pb_field_by_number(m, 3)->message == m && nh_pb_field_by_number(m, 3)->presence);
    nh_pb_schema_free(s);

    CHECK(load(NH_PB_MESSAGE, ".t.Missing", err) == NULL);
    CHECK(strstr(err, "t.Missing is not in the set") != NULL);
    CHECK(load(NH_PB_GROUP, ".t.M", err) == NULL);
    CHECK(strstr(err, "groups are not supported") != NULL);
    nh_pb_schema_t *bad = (void *)1;
    CHECK(nh_pb_schema_load(&bad, (const uint8_t *)"\x0a\x05", 2, err, sizeof err) ==
          NH_EPB_SCHEMA);
    CHECK(bad == NULL);
}

static void test_decode(void) {
    char err[200];
    nh_pb_schema_t *sc = load(0, NULL, err);
    const nh_pb_message_t *m = nh_pb_schema_message(sc, "M");
    seen_t s;
    /* a = -1 as a 10-byte varint: the low 32 bits */
    CHECK(decode(m, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, &s) == 0);
    CHECK(s.scalars == 1 && s.last_i == -1);
    /* r packed and unpacked, zigzag: 1 -> -1, 4 -> 2 */
    CHECK(decode(m, "\x22\x02\x01\x04\x20\x03", 6, &s) == 0);
    CHECK(s.scalars == 3 && s.last_i == -2);
    /* child { child { s = "xy" } } */
    CHECK(decode(m, "\x1a\x06\x1a\x04\x12\x02xy", 8, &s) == 0);
    CHECK(s.begins == 2 && s.ends == 2 && s.bytes == 1 && s.last_len == 2);
    /* unknown fields of every wire type, a group with a nested group */
    CHECK(decode(m, "\x30\x05\x39\1\2\3\4\5\6\7\x08\x3d\1\2\3\4\x42\x01z\x4b\x53\x08\x01\x54\x4c",
                 25, &s) == 0);
    CHECK(s.scalars == 0);
    CHECK(decode(m, "\x08", 1, &s) == NH_EPB_TRUNCATED);
    CHECK(decode(m, "\x08\x80", 2, &s) == NH_EPB_TRUNCATED);
    CHECK(decode(m, "\x12\x05xy", 4, &s) == NH_EPB_TRUNCATED);
    CHECK(decode(m, "\x0a\x00", 2, &s) == NH_EPB_WIRE_TYPE); /* a is a varint */
    CHECK(decode(m, "\x0e", 1, &s) == NH_EPB_WIRE_TYPE);     /* wire type 6 */
    CHECK(decode(m, "\x00\x01", 2, &s) == NH_EPB_FIELD_NUM);
    CHECK(decode(m, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11, &s) == NH_EPB_VARINT);
    CHECK(decode(m, "\x4b\x54", 2, &s) == NH_EPB_GROUP); /* group 9 closed as 10 */
    CHECK(decode(m, "\x4c", 1, &s) == NH_EPB_GROUP);     /* an end without a start */
    CHECK(decode(m, "\x1a\x03\x08\x01", 4, &s) == NH_EPB_TRUNCATED);

    /* nesting: exactly the limit is fine, one more is refused */
    for (int depth = NH_PB_MAX_DEPTH; depth <= NH_PB_MAX_DEPTH + 1; depth++) {
        nh_pb_buf_t b = {0};
        size_t marks[NH_PB_MAX_DEPTH + 2];
        for (int i = 0; i < depth; i++) {
            nh_pb_put_tag(&b, 3, NH_PB_LEN);
            marks[i] = nh_pb_begin_len(&b);
        }
        for (int i = depth - 1; i >= 0; i--)
            nh_pb_end_len(&b, marks[i]);
        int e = decode(m, (const char *)b.data, b.len, &s);
        CHECK(depth == NH_PB_MAX_DEPTH ? e == 0 : e == NH_EPB_DEPTH);
        nh_pb_buf_free(&b);
    }
    nh_pb_schema_free(sc);
}

static void test_write(void) {
    nh_pb_buf_t b = {0};
    nh_pb_scalar_t v;
    v.i = -2;
    nh_pb_put_scalar(&b, NH_PB_SINT64, v);
    v.i = -1;
    nh_pb_put_scalar(&b, NH_PB_INT32, v);
    CHECK(b.len == 11 && b.data[0] == 3 && b.data[10] == 1);
    b.len = 0;
    /* a section over 127 bytes gets a 2-byte length: the body moves up by one */
    size_t mark = nh_pb_begin_len(&b);
    for (int i = 0; i < 200; i++)
        nh_pb_put_varint(&b, (uint64_t)(i % 100));
    nh_pb_end_len(&b, mark);
    CHECK(b.len == 202 && b.data[0] == (200 % 128 | 0x80) && b.data[1] == 1 && b.data[2] == 0 &&
          b.data[201] == 99);
    nh_pb_buf_free(&b);

    CHECK(nh_pb_parse_int64("-9223372036854775808", 20, 0, &v) == 0 && v.i == INT64_MIN);
    CHECK(nh_pb_parse_int64("9223372036854775808", 19, 0, &v) == NH_EPB_RANGE);
    CHECK(nh_pb_parse_int64("18446744073709551615", 20, 1, &v) == 0 && v.u == UINT64_MAX);
    CHECK(nh_pb_parse_int64("18446744073709551616", 20, 1, &v) == NH_EPB_RANGE);
    CHECK(nh_pb_parse_int64("-1", 2, 1, &v) == NH_EPB_RANGE);
    CHECK(nh_pb_parse_int64("", 0, 0, &v) == NH_EPB_RANGE);
    CHECK(nh_pb_parse_int64("1e3", 3, 0, &v) == NH_EPB_RANGE);
}

/* pomelo-protobuf's flavour: a repeated scalar is its tag (the element's wire type), a count,
 * the elements; schemas are built, not loaded. */
static void test_pomelo_flavour(void) {
    nh_pb_schema_t *sc;
    char err[200];
    CHECK(nh_pb_schema_new(&sc) == 0);
    int m = nh_pb_schema_add_message(sc, "Room.join");
    CHECK(m == 0);
    CHECK(nh_pb_schema_add_field(sc, m, "tags", 1, NH_PB_UINT32, 1, NULL) == 0);
    CHECK(nh_pb_schema_add_field(sc, m, "user", 2, NH_PB_MESSAGE, 0, "Room.join.User") == 0);
    int u = nh_pb_schema_add_message(sc, "Room.join.User");
    CHECK(nh_pb_schema_add_field(sc, u, "name", 1, NH_PB_STRING, 0, NULL) == 0);
    CHECK(nh_pb_schema_finish(sc, NH_PB_POMELO, err, sizeof err) == 0);
    const nh_pb_message_t *join = nh_pb_schema_message(sc, "Room.join");
    const nh_pb_field_t *tags = nh_pb_field_by_number(join, 1);
    CHECK(tags->count_prefixed && tags->packed && tags->presence);
    CHECK(nh_pb_field_by_number(join, 2)->message == nh_pb_schema_message(sc, "Room.join.User"));
    seen_t s;
    CHECK(decode(join, "\x08\x02\x01\xac\x02", 5, &s) == 0);
    CHECK(s.scalars == 2 && s.last_i == 300);
    CHECK(decode(join, "\x08\x03\x01\xac\x02", 5, &s) == NH_EPB_TRUNCATED);
    CHECK(decode(join, "\x08\xff\xff\xff\xff\x0f\x01", 7, &s) == NH_EPB_TRUNCATED);
    nh_pb_schema_free(sc);

    CHECK(nh_pb_schema_new(&sc) == 0);
    m = nh_pb_schema_add_message(sc, "A");
    CHECK(nh_pb_schema_add_field(sc, m, "b", 1, NH_PB_MESSAGE, 0, "B") == 0);
    CHECK(nh_pb_schema_finish(sc, NH_PB_POMELO, err, sizeof err) == NH_EPB_SCHEMA);
    CHECK(strstr(err, "type B is not in the set") != NULL);
    nh_pb_schema_free(sc);
}

int main(void) {
    test_schema();
    test_pomelo_flavour();
    test_decode();
    test_write();
    return check_done();
}
