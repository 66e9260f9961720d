import { authorizationDetailsSchema, describe as describePayments } from '../../src/stepup/details';

const payment = (creditor: Record<string, unknown>) =>
  authorizationDetailsSchema.parse([{ type: 'payment_initiation', instructedAmount: { amount: '99.00', currency: 'GBP' }, ...creditor }]);

describe('the payment text shown to the user (SMS and push)', () => {
  test('names the payee, with the account in brackets when both are given', () => {
    expect(describePayments(payment({ creditorName: 'Acme Ltd', creditorAccount: { iban: 'GB33BUKB20201555555555' } }))).toBe(
      '99.00 GBP to Acme Ltd (GB33BUKB20201555555555)',
    );
    expect(describePayments(payment({ creditorName: 'Acme Ltd' }))).toBe('99.00 GBP to Acme Ltd');
  });

  test('with only an account, the account is the payee: no empty name, no bare brackets', () => {
    expect(describePayments(payment({ creditorAccount: { iban: 'GB33BUKB20201555555555' } }))).toBe('99.00 GBP to GB33BUKB20201555555555');
    expect(describePayments(payment({ creditorAccount: { identification: '12345678' } }))).toBe('99.00 GBP to 12345678');
  });

  test('several payments are joined', () => {
    const two = authorizationDetailsSchema.parse([
      { type: 'payment_initiation', instructedAmount: { amount: '1', currency: 'EUR' }, creditorName: 'A' },
      { type: 'payment_initiation', instructedAmount: { amount: '2.50', currency: 'EUR' }, creditorAccount: { iban: 'DE89370400440532013000' } },
    ]);
    expect(describePayments(two)).toBe('1 EUR to A; 2.50 EUR to DE89370400440532013000');
  });
});
