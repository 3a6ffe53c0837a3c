// roundtrip-core's fd round trip with fdpass loaded by require().
'use strict';
require('./roundtrip-core.cjs').roundTrip(require('fdpass'), 'cjs', __filename).catch((err) => {
  console.error(err);
  process.exit(1);
});
