/* Unit tests for the minor allocator: smallest-first reuse, exhaustion,
 * reservation on restore, and bounds. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "check-run.h"
#include "core/minor.h"

START_TEST(test_sequential_and_reuse)
{
	struct minors m = { { 0 } };

	for (int i = 0; i < 130; i++)
		ck_assert_int_eq(minor_alloc(&m), i);
	minor_free(&m, 64);
	minor_free(&m, 3);
	minor_free(&m, 100);
	ck_assert(!minor_used(&m, 3));
	ck_assert(minor_used(&m, 4));
	/* The smallest free one comes back first. */
	ck_assert_int_eq(minor_alloc(&m), 3);
	ck_assert_int_eq(minor_alloc(&m), 64);
	ck_assert_int_eq(minor_alloc(&m), 100);
	ck_assert_int_eq(minor_alloc(&m), 130);
}
END_TEST

START_TEST(test_exhaustion)
{
	struct minors m = { { 0 } };

	for (int i = 0; i < MINOR_MAX; i++)
		ck_assert_int_eq(minor_alloc(&m), i);
	ck_assert_int_eq(minor_alloc(&m), -ENOSPC);
	ck_assert(minor_used(&m, MINOR_MAX - 1));
	minor_free(&m, MINOR_MAX - 1);
	ck_assert_int_eq(minor_alloc(&m), MINOR_MAX - 1);
	ck_assert_int_eq(minor_alloc(&m), -ENOSPC);
	minor_free(&m, 1000);
	ck_assert_int_eq(minor_alloc(&m), 1000);
}
END_TEST

START_TEST(test_reserve)
{
	struct minors m = { { 0 } };

	/* A restarted daemon takes back 0, 2 and 7; new taps fill the gaps. */
	ck_assert_int_eq(minor_reserve(&m, 2), 0);
	ck_assert_int_eq(minor_reserve(&m, 7), 0);
	ck_assert_int_eq(minor_reserve(&m, 0), 0);
	ck_assert_int_eq(minor_reserve(&m, 2), -EEXIST);
	ck_assert_int_eq(minor_alloc(&m), 1);
	ck_assert_int_eq(minor_alloc(&m), 3);
	ck_assert_int_eq(minor_reserve(&m, 3), -EEXIST);
	ck_assert_int_eq(minor_reserve(&m, MINOR_MAX - 1), 0);
	ck_assert(minor_used(&m, MINOR_MAX - 1));
}
END_TEST

START_TEST(test_range)
{
	struct minors m = { { 0 } };

	ck_assert_int_eq(minor_reserve(&m, -1), -ERANGE);
	ck_assert_int_eq(minor_reserve(&m, MINOR_MAX), -ERANGE);
	ck_assert_int_eq(minor_reserve(&m, 1 << 30), -ERANGE);
	ck_assert(!minor_used(&m, -1));
	ck_assert(!minor_used(&m, MINOR_MAX));
	/* Freeing out of range or unused minors changes nothing. */
	minor_free(&m, -5);
	minor_free(&m, MINOR_MAX);
	minor_free(&m, 10);
	for (unsigned i = 0; i < MINOR_MAX / 64; i++)
		ck_assert_uint_eq(m.bits[i], 0);
	ck_assert_int_eq(minor_alloc(&m), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("minor");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_sequential_and_reuse);
	tcase_add_test(tc, test_exhaustion);
	tcase_add_test(tc, test_reserve);
	tcase_add_test(tc, test_range);
	return check_run(s, tc);
}
