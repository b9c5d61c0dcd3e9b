/* The end of every unit test's main(): run the suite's one test case and
 * turn its failures into the exit status automake reads. */
#ifndef TAPD_CHECK_RUN_H
#define TAPD_CHECK_RUN_H

#include <check.h>
#include <stdlib.h>

static inline int check_run(Suite *s, TCase *tc)
{
	SRunner *sr;
	int failed;

	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
