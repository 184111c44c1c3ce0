#!/bin/sh
# `npm test`'s checks before the tests: type-check and build (tsc), lint (eslint) and the folder
# arrows (dependency-cruiser). They are independent, so they run side by side; any failure fails.
npm run -s build & build=$!
npm run -s lint & lint=$!
npm run -s arrows & arrows=$!
status=0
wait $build || status=1
wait $lint || status=1
wait $arrows || status=1
exit $status
