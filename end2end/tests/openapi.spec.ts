// The OpenAPI document of `/api/v1`, generated from the server's code, passes an off-the-shelf
// OpenAPI 3.1 validator (`@seriousme/openapi-schema-validator`), and scripts can read it.
import { Validator } from '@seriousme/openapi-schema-validator';
import { expect, test } from '@playwright/test';

test('the served OpenAPI document is valid OpenAPI 3.1', async ({ request }) => {
  const response = await request.get('/api/v1/openapi.json');
  expect(response.status()).toBe(200);
  const doc = await response.json();
  expect(doc.openapi).toMatch(/^3\.1\./);
  const validator = new Validator();
  const result = await validator.validate(doc);
  expect(result.errors ?? [], JSON.stringify(result.errors, null, 2)).toEqual([]);
  expect(result.valid).toBe(true);
  expect(validator.version).toBe('3.1');
  // What the document promises holds for one route: the instance list's shape.
  const list = await (await request.get('/api/v1/instances')).json();
  const schema = doc.components.schemas.InstanceList;
  for (const key of schema.required) {
    expect(list).toHaveProperty(key);
  }
});
